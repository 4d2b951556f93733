"""Visual-token accounting shared by every method: what enters the LLM, what is left after each
pruning layer, and the layer-averaged count (FLOPs-equivalent), from an in-LLM dropper's `report()`.

A pre-LLM method (FasterVLM, VisionZip, ...) hands the LLM K tokens per image and every layer sees
those K, so its layer-averaged count is K. An in-LLM method (FastV, PyramidDrop, DART, ...) hands it
all N and drops some before its pruning layers; layer l then sees the count left after the last
pruning layer <= l, and the layer-averaged count is the mean over the LLM's layers. Papers compare
in-LLM and pre-LLM methods at equal layer-averaged tokens, since the LLM's linear FLOPs are
proportional to it.

Dropper reports come in two shapes, both read here:
- one pruning layer: {"layer": L, "kept_after_layer": [k per image], ...};
- staged: {"layers": [L_1, ...], "kept_per_stage": [[k_1, ...] per image], ...}.
"""

from __future__ import annotations

from typing import Sequence

# The fields every answer's metadata carries (per image), for every method.
ACCOUNTING_KEYS = ("visual_tokens", "prune_layers", "visual_tokens_after_layers", "layer_averaged_visual_tokens")


def pruning_stages(report: dict | None, images: int) -> list[list[tuple[int, int]]]:
    """Per image, the (layer, tokens kept from that layer on) pairs of a dropper's report ([] if none).

    A staged report lists every stage; a stage an image did not reach is left out.
    """
    if not report:
        return [[] for _ in range(images)]
    if "layers" in report and "kept_per_stage" in report:
        layers = [int(x) for x in report["layers"]]
        per_image = report["kept_per_stage"]
        if len(per_image) != images:
            raise ValueError(f"the in-LLM report lists {len(per_image)} images' stages for {images} images")
        return [[(l, int(k)) for l, k in zip(layers, counts)] for counts in per_image]
    if "layer" in report and "kept_after_layer" in report:
        kept = report["kept_after_layer"]
        if len(kept) != images:
            raise ValueError(f"the in-LLM report lists {len(kept)} images' counts for {images} images")
        return [[(int(report["layer"]), int(k))] for k in kept]
    raise ValueError(f"an in-LLM report needs 'layer'/'kept_after_layer' or 'layers'/'kept_per_stage'; "
                     f"got keys {sorted(report)}")


def tokens_per_layer(entering: int, stages: Sequence[tuple[int, int]], num_layers: int) -> list[int]:
    """Visual tokens each of the `num_layers` LLM layers runs on, for one image.

    entering: tokens handed to the LLM; stages: (layer, kept from that layer on), increasing layers.
    """
    counts, current, todo = [], entering, sorted(stages)
    for layer in range(num_layers):
        while todo and todo[0][0] <= layer:
            current = todo.pop(0)[1]
        counts.append(current)
    return counts


def layer_average(per_layer: Sequence[int]) -> float:
    """Mean tokens over the LLM's layers."""
    return sum(per_layer) / len(per_layer) if per_layer else 0.0


def visual_token_accounting(entering: Sequence[int], num_layers: int, report: dict | None = None) -> list[dict]:
    """Per image, the metadata every answer records, whatever the method:

    - `visual_tokens`: tokens entering the LLM;
    - `prune_layers` / `visual_tokens_after_layers`: each pruning layer and the count from it on
      ([] for pre-LLM methods and unpruned runs);
    - `layer_averaged_visual_tokens`: the count averaged over the LLM's layers (FLOPs-equivalent;
      the entering count when nothing is dropped inside the LLM);
    - for in-LLM methods also `prune_layer` / `visual_tokens_after_layer`: the first pruning layer
      and its count (the keys of one-layer methods such as FastV).
    """
    out = []
    for n, stages in zip(entering, pruning_stages(report, len(entering))):
        rec = {
            "visual_tokens": int(n),
            "prune_layers": [l for l, _ in stages],
            "visual_tokens_after_layers": [k for _, k in stages],
            "layer_averaged_visual_tokens": layer_average(tokens_per_layer(int(n), stages, num_layers)),
        }
        if stages:
            rec.update(prune_layer=stages[0][0], visual_tokens_after_layer=stages[0][1])
        out.append(rec)
    return out
