"""PyramidDrop inside the LLM: image tokens leave in stages, each stage keeping the ones the last
instruction token attends to most (Xing et al., arXiv 2410.17247; official code Cooperx521/PyramidDrop,
`llava/model/modeling_llama_pdrop.py`, `pdrop_forward` and `pdrop_rank_drop`).

The rule, as the official inference runs it. Before each stage layer L (default 8, 16, 24) the
tokens entering layer L are scored with layer L's own q/k (its input norm, projections and RoPE):
the softmax row of the last prompt token, averaged over heads, read at the image tokens still
present. Of an image's N tokens, stage s keeps int(N * ratios[s]) (default 0.5, 0.25, 0.125, i.e.
lambda = 0.5 per stage), in their original order; layer L and the later ones then run on the kept
tokens only and cache only them. The survivors are renumbered to consecutive positions and decode
steps continue from there, as the official code does (`positions=keep` keeps the unpruned ones).
Decoding never re-selects.

Token accounting: with stage layers L_1 < ... < L_S and counts N = k_0 > k_1 > ... > k_S, layers
[L_s, L_{s+1}) see k_s image tokens; the layer-averaged count is their mean over all layers.
"""

from __future__ import annotations

import torch

from llava.probe import Captured, HeadGeometry, head_mean_rows

from .base import Selection, VisionSignals, topk_raster
from .in_llm import LoopState
from .registry import register_method

POSITIONS = ("renumber", "keep")


def as_tuple(value, name: str, cast) -> tuple:
    """An option given as one value or 'a:b:c' (parsed to a tuple) -> a tuple of `cast` values."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    try:
        return tuple(cast(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"pdrop {name}={value!r} must be a number or a ':'-separated list of numbers") from None


def pdrop_schedule(layers, ratios, lam: float | None, num_layers: int) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(stage layers, kept share of the original image tokens per stage), checked against the LLM depth."""
    layers = as_tuple(layers, "layers", int)
    if ratios is None:
        if lam is None or not 0 < lam <= 1:
            raise ValueError(f"pdrop lambda must be in (0, 1], got {lam!r}")
        ratios = tuple(lam ** (s + 1) for s in range(len(layers)))
    ratios = as_tuple(ratios, "ratios", float)
    if len(ratios) != len(layers):
        raise ValueError(f"pdrop needs one ratio per stage layer: layers={list(layers)} but ratios={list(ratios)}")
    if list(layers) != sorted(set(layers)) or not all(1 <= l < num_layers for l in layers):
        raise ValueError(f"pdrop layers must increase within [1, {num_layers - 1}] for a {num_layers}-layer LLM, "
                         f"got {list(layers)}")
    if not all(0 < r <= 1 for r in ratios) or list(ratios) != sorted(ratios, reverse=True):
        raise ValueError(f"pdrop ratios must be in (0, 1] and not increase, got {list(ratios)}")
    return layers, ratios


def stage_counts(n: int, ratios: tuple[float, ...]) -> list[int]:
    """Image tokens kept after each stage, as the official code counts them: int(N * ratio)."""
    return [max(1, int(n * r)) for r in ratios]


def stage_layer_average(n: int, counts: list[int], layers: tuple[int, ...], num_layers: int) -> float:
    """Visual tokens per LLM layer, averaged over all layers."""
    bounds = [0, *layers, num_layers]
    sizes = [n, *counts]
    return sum(k * (hi - lo) for k, lo, hi in zip(sizes, bounds[:-1], bounds[1:])) / num_layers


class PyramidDropDropper:
    """PyramidDrop for one batch, run by the LLM loop (`llava.model.llm_loop`).

    spans: per row, the [start, end) prefill positions of each image's tokens; budgets: K per image,
    None or one that covers the image (the schedule is in `ratios`); num_layers: the LLM's depth. After the
    prefill, `kept` holds per image the finally kept positions within the image (raster order) and
    `stages` per image the kept positions after each stage.
    """

    q_rows = slice(-1, None)  # the last prompt token (rows are left-padded)
    needs_budget = False  # the schedule is in the arguments: no --visual-token-num runs it too

    def __init__(self, spans, budgets, num_layers: int, layers=(8, 16, 24), ratios=None, positions="renumber",
                 **kwargs):
        unknown = set(kwargs) - {"lambda"}
        if unknown:
            raise ValueError(f"pdrop: unknown argument(s) {sorted(unknown)}")
        if positions not in POSITIONS:
            raise ValueError(f"pdrop positions must be one of {POSITIONS}, got {positions!r}")
        self.layers, self.ratios = pdrop_schedule(layers, ratios, kwargs.get("lambda", 0.5), num_layers)
        self.spans, self.num_layers = spans, num_layers
        self.drop_layers = self.probe_layers = self.layers
        self.renumber_positions = positions == "renumber"
        self.sizes = [e - s for row in spans for s, e in row]
        for n, k in zip(self.sizes, budgets):
            if k is not None and k < n:
                raise ValueError(f"pdrop takes its schedule from layers=/ratios=, not from the budget: got "
                                 f"--visual-token-num {k} for an image of {n} tokens (pass {n})")
        self.counts = [stage_counts(n, self.ratios) for n in self.sizes]
        self.stages: list[list[torch.Tensor]] = [[] for _ in self.sizes]
        self.scores: dict[int, torch.Tensor] = {}  # layer -> [B, T] the scoring row over the tokens entering it

    @property
    def kept(self) -> list[torch.Tensor]:
        return [s[-1] if s else torch.arange(n) for s, n in zip(self.stages, self.sizes)]

    def keep(self, layer: int, state: LoopState, captured: dict[int, Captured], geometry: HeadGeometry):
        t = state.valid.shape[1]
        if not bool((state.last_index() == t - 1).all()):
            raise ValueError("pdrop needs left-padded rows (the last prompt token at the end of every row)")
        stage = self.layers.index(layer)
        cap = captured[layer]
        last = torch.tensor([t - 1], device=state.valid.device)
        scores = head_mean_rows(cap.q, cap.k, geometry, q_positions=last, rope=state.rope,
                                key_mask=state.valid, causal=True)[:, 0]  # [B, 1, T] -> [B, T]
        self.scores[layer] = scores
        image_id = 0
        keep = []
        for b, row in enumerate(self.spans):
            origin = state.origin[b]
            take = state.valid[b].clone()
            for start, end in row:
                image = torch.nonzero((origin >= start) & (origin < end)).flatten()  # [n] remaining, raster order
                chosen = topk_raster(scores[b, image][None], self.counts[image_id][stage])[0]
                take[image] = False
                take[image[chosen]] = True
                self.stages[image_id].append(origin[image[chosen]] - start)
                image_id += 1
            keep.append(torch.nonzero(take).flatten())
        return keep

    def report(self) -> dict:
        """Kept image tokens after each stage layer and the layer-averaged count, per image.

        `layer` / `kept_after_layer` are the first stage (FastV's keys); `layers` / `kept_per_stage`
        list every stage.
        """
        counts = [[len(k) for k in s] for s in self.stages]
        return {
            "layer": self.layers[0],
            "kept_after_layer": [c[0] if c else n for c, n in zip(counts, self.sizes)],
            "layer_averaged": [stage_layer_average(n, c, self.layers[:len(c)], self.num_layers)
                               for n, c in zip(self.sizes, counts)],
            "layers": list(self.layers),
            "kept_per_stage": counts,
        }


@register_method("pdrop", stage="in_llm",
                 defaults={"layers": (8, 16, 24), "ratios": None, "lambda": 0.5, "positions": "renumber"},
                 llm_pruner=PyramidDropDropper)
def pdrop(signals: VisionSignals, k: int, **kwargs) -> Selection:
    """PyramidDrop: staged drops inside the LLM by the last instruction token's attention (no pre-LLM rule)."""
    raise ValueError("pdrop scores image tokens inside the LLM (generate with an LLM loop); "
                     "it has no pre-LLM selection")
