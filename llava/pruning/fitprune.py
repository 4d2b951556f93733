"""FitPrune inside the LLM: a per-layer recipe of how many image tokens each layer removes, each
removal ranked by self- and cross-attention (Ye et al., arXiv 2409.10197; official code ywh187/FitPrune,
`LLaVA_1.5/llava/model/language_model/modeling_llama.py`, `LlamaAttention.forward` and `LlamaModel.forward`).

The rule, as the official inference runs it. At layer i, with the recipe removing r_i > 0 of the n image
tokens still present, layer i's attention map (softmax over the tokens entering it, causal) is reduced
to its maximum over heads, A [T, T]. Per image token j:
    self_j  = sum over the image's rows v of A[v, j] / n      (the image tokens' attention to j)
    cross_j = sum over the text rows after the image of A[t, j] (the instruction's attention to j)
and the r_i tokens with the smallest cross_j * self_j leave (ascending sort; the others stay in their
order). In the official code they leave right after layer i's attention: layer i still holds them as
keys (and in its KV cache), its o_proj/MLP and every later layer run without them. Here the LLM loop
drops them before layer i + 1, which gives the same outputs for every kept token (layer i's MLP is
per token) and the same caches. Kept tokens keep their positions, as the official code does
(`position_ids[:, topk_idx]`); decoding never re-selects.

Recipes. The official code ships its schedules hard-coded for 32-layer LLaVA-1.5-7B with 576 image
tokens, keyed by reduction ratio (the `delete_scheme` tables); they are `PRESETS` here. A recipe for
another model comes from the search (`python -m llava.pruning.fitprune_search`) as a JSON file.

Token accounting: layer i sees n_i = N - (r_0 + ... + r_{i-1}) image tokens; the layer-averaged count
is the mean of n_i over all layers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llava.probe import Captured, HeadGeometry, attention_rows

from .base import Selection, VisionSignals
from .in_llm import LoopState
from .registry import register_method

PRESET_LAYERS, PRESET_TOKENS = 32, 576
DEFAULT_RATIO = 0.6  # the official scripts' --reduction_ratio 60 (scripts/v1_5/eval/textvqa.sh; search default 0.6)

# reduction ratio -> image tokens removed at each of LLaVA-1.5-7B's 32 layers (official `delete_scheme`)
PRESETS: dict[float, tuple[int, ...]] = {
    0.0: (0,) * 32,
    0.1: (0, 0, 1, 2, 1, 0, 1, 4, 5, 5, 11, 4, 2, 2, 0, 0, 1, 1, 2, 4, 2, 10, 1, 1, 1, 2, 1, 1, 0, 1, 0, 0),
    0.2: (0, 0, 3, 3, 1, 1, 4, 16, 14, 15, 24, 4, 2, 3, 2, 0, 6, 0, 5, 13, 4, 19, 2, 1, 1, 1, 1, 1, 2, 1, 0, 0),
    0.3: (0, 0, 7, 6, 4, 5, 16, 40, 24, 21, 24, 4, 2, 3, 4, 0, 16, 0, 11, 26, 6, 32, 3, 1, 0, 1, 2, 2, 4, 0, 0, 0),
    0.4: (0, 1, 21, 13, 14, 11, 41, 53, 29, 15, 14, 5, 1, 4, 5, 1, 26, 1, 13, 28, 6, 27, 2, 1, 0, 0, 1, 1, 2, 0, 0,
          0),
    0.5: (3, 7, 49, 24, 29, 17, 59, 41, 26, 8, 10, 6, 2, 5, 7, 2, 30, 3, 13, 27, 5, 23, 2, 1, 0, 0, 1, 1, 2, 0, 0, 0),
    0.55: (6, 17, 69, 31, 34, 19, 59, 30, 23, 6, 8, 7, 2, 5, 8, 2, 29, 4, 12, 25, 4, 19, 2, 1, 0, 0, 1, 0, 1, 0, 0,
           0),
    0.6: (14, 33, 89, 36, 36, 20, 55, 21, 18, 4, 7, 5, 2, 5, 7, 4, 26, 5, 11, 24, 4, 18, 2, 1, 0, 0, 1, 0, 1, 0, 0,
          0),
    0.7: (48, 79, 118, 41, 33, 17, 36, 9, 9, 2, 3, 2, 1, 3, 4, 8, 18, 7, 8, 20, 4, 13, 2, 1, 0, 0, 1, 0, 1, 0, 0, 0),
    0.8: (128, 127, 118, 35, 26, 8, 13, 3, 2, 1, 0, 0, 0, 2, 1, 8, 7, 8, 5, 11, 2, 6, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0),
    0.9: (262, 153, 80, 19, 13, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 1, 2, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0),
}
# LLaVA-NeXT's tables for a 2880-token image (official LLaVA_NEXT/llava/model/language_model/modeling_llama.py),
# scaled at run time to each image's token count: int(r * n / 2880)
NEXT_TOKENS = 2880
NEXT_PRESETS: dict[float, tuple[int, ...]] = {
    0.0: (0,) * 32,
    0.4: (7, 73, 162, 124, 119, 148, 131, 151, 105, 26, 30, 17, 5, 19, 44, 10, 73, 60, 67, 61, 32, 39, 0, 3, 1, 5,
          0, 0, 0, 0, 0, 0),
    0.6: (98, 313, 279, 218, 201, 221, 167, 132, 63, 12, 11, 5, 1, 8, 26, 13, 83, 57, 56, 58, 24, 42, 0, 2, 1, 5,
          0, 0, 0, 0, 0, 0),
}
SEARCH_COMMAND = "python -m llava.pruning.fitprune_search --model-path ... --reduction-ratio R --output recipe.json"


@dataclass(frozen=True)
class Recipe:
    """How many image tokens each LLM layer removes, for images of `num_tokens` tokens.

    removed[i]: tokens removed at layer i (ranked by layer i's attention; gone from layer i + 1 on).
    source: where it came from ("preset reduction_ratio=0.6", a file path, "removed=").
    """

    removed: tuple[int, ...]
    num_tokens: int
    source: str
    reduction_ratio: float | None = None
    model: str | None = None
    flops_ratio: float | None = None

    @property
    def num_layers(self) -> int:
        return len(self.removed)

    def seen(self) -> list[int]:
        """Image tokens each layer sees: [num_layers]."""
        out, n = [], self.num_tokens
        for r in self.removed:
            out.append(n)
            n -= r
        return out

    def kept(self) -> list[int]:
        """Image tokens left after each layer: [num_layers]."""
        return [n - r for n, r in zip(self.seen(), self.removed)]

    def to_json(self, **extra) -> dict:
        return {"method": "fitprune", "model": self.model, "num_layers": self.num_layers,
                "num_tokens": self.num_tokens, "reduction_ratio": self.reduction_ratio,
                "removed": list(self.removed), "kept": self.kept(), "flops_ratio": self.flops_ratio, **extra}

    def check(self) -> "Recipe":
        """Counts are non-negative ints, at least one token stays, the last layer removes nothing."""
        if not all(isinstance(r, int) and r >= 0 for r in self.removed):
            raise ValueError(f"fitprune recipe {self.source}: removed counts must be ints >= 0, "
                             f"got {list(self.removed)}")
        if sum(self.removed) >= self.num_tokens:
            raise ValueError(f"fitprune recipe {self.source}: removes {sum(self.removed)} of {self.num_tokens} image "
                             "tokens; at least one must stay")
        if self.removed and self.removed[-1]:
            raise ValueError(f"fitprune recipe {self.source}: the last layer removes {self.removed[-1]} tokens, "
                             "which no later layer would skip (set it to 0)")
        return self


def load_recipe(path: str | Path) -> Recipe:
    """A recipe JSON written by `llava.pruning.fitprune_search` (or by hand: num_tokens and removed)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"fitprune recipe {path} not found (write one with {SEARCH_COMMAND})")
    try:
        data = json.loads(path.read_text())
        removed = tuple(int(r) for r in data["removed"])
        num_tokens = int(data["num_tokens"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"fitprune recipe {path} is not a recipe JSON with 'num_tokens' and 'removed' "
                         f"({err})") from None
    if "num_layers" in data and int(data["num_layers"]) != len(removed):
        raise ValueError(f"fitprune recipe {path}: num_layers is {data['num_layers']} but 'removed' has "
                         f"{len(removed)} entries")
    recipe = Recipe(removed, num_tokens, str(path), data.get("reduction_ratio"), data.get("model"),
                    data.get("flops_ratio"))
    if "kept" in data and list(data["kept"]) != recipe.kept():
        raise ValueError(f"fitprune recipe {path}: 'kept' {data['kept']} does not follow from 'removed'")
    return recipe.check()


def resolve_recipe(num_layers: int, num_tokens: int = PRESET_TOKENS, reduction_ratio: float | None = None,
                   recipe: str | None = None, removed=None) -> Recipe:
    """The recipe that the arguments name for an image of `num_tokens` tokens, checked against the LLM's depth.

    A preset is LLaVA-1.5's table for a 576-token image, else LLaVA-NeXT's 2880-token table scaled to
    the image (`int(r * n / 2880)` per layer, as the official LLaVA-NeXT code scales it).
    """
    given = [name for name, v in (("recipe", recipe), ("removed", removed)) if v is not None]
    if len(given) > 1 or (given and reduction_ratio is not None):
        raise ValueError(f"fitprune takes one of reduction_ratio=, recipe=, removed=; got "
                         f"{given + (['reduction_ratio'] if reduction_ratio is not None else [])}")
    if recipe is not None:
        out = load_recipe(recipe)
    elif removed is not None:
        values = removed if isinstance(removed, (tuple, list)) else (removed,)
        try:
            counts = tuple(int(v) for v in values)
        except (TypeError, ValueError):
            raise ValueError(f"fitprune removed={removed!r} must be ':'-separated ints, one per layer") from None
        out = Recipe(counts, num_tokens, "removed=").check()
    else:
        out = preset_recipe(DEFAULT_RATIO if reduction_ratio is None else float(reduction_ratio), num_tokens)
        if num_layers != PRESET_LAYERS:
            raise ValueError(f"fitprune {out.source} is a schedule of a 32-layer LLM ({out.model}), but this LLM "
                             f"has {num_layers} layers; run the search for it ({SEARCH_COMMAND}) and pass recipe=PATH")
    if out.num_layers != num_layers:
        raise ValueError(f"fitprune recipe {out.source} is for a {out.num_layers}-layer LLM, but this LLM has "
                         f"{num_layers} layers (search a recipe for this model: {SEARCH_COMMAND})")
    if out.num_tokens != num_tokens:
        raise ValueError(f"fitprune recipe {out.source} is for images of {out.num_tokens} tokens, but this image "
                         f"has {num_tokens} (search a recipe for this layout: {SEARCH_COMMAND})")
    return out


def preset_recipe(ratio: float, num_tokens: int) -> Recipe:
    """An official table: LLaVA-1.5-7B's for 576-token images, LLaVA-NeXT-7B's (scaled) otherwise."""
    next_model = num_tokens != PRESET_TOKENS
    table = NEXT_PRESETS if next_model else PRESETS
    match = [r for r in table if abs(r - ratio) < 1e-9]
    if not match:
        kind = f"LLaVA-NeXT ({NEXT_TOKENS}-token images, scaled)" if next_model else "LLaVA-1.5 (576-token images)"
        raise ValueError(f"fitprune reduction_ratio={ratio!r} is not a {kind} preset; presets: "
                         f"{', '.join(str(r) for r in table)} (or make a recipe: {SEARCH_COMMAND})")
    if not next_model:
        return Recipe(PRESETS[match[0]], PRESET_TOKENS, f"preset reduction_ratio={match[0]}", match[0], "llava-v1.5-7b")
    scaled = tuple(int(r * num_tokens / NEXT_TOKENS) for r in NEXT_PRESETS[match[0]])
    source = f"LLaVA-NeXT preset reduction_ratio={match[0]}"
    return Recipe(scaled, num_tokens, source, match[0], "llava-v1.6-7b").check()


# ---- the scoring rule -----------------------------------------------------------------------------
def head_max_map(cap: Captured, geometry: HeadGeometry, rope, rows: torch.Tensor, b: int) -> torch.Tensor:
    """Row b's causal attention map over the tokens `rows` (indices into the captured sequence), max over heads.

    cap.q [B, T, H*Dh] (all rows), cap.k [B, T, Hkv*Dh]; rope (cos, sin) [B, T, Dh]. -> [n, n] float32.
    """
    n = len(rows)
    q, k = cap.q[b:b + 1, rows], cap.k[b:b + 1, rows]  # [1, n, H*Dh], [1, n, Hkv*Dh]
    tables = tuple(r[b:b + 1, rows] for r in rope) if rope is not None else None
    probs = attention_rows(q, k, geometry, q_positions=torch.arange(n, device=q.device), rope=tables, causal=True)
    return probs[0].amax(dim=0)  # [H, n, n] -> [n, n]


def fitprune_parts(attn: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(self [n], cross [n]) of one image's tokens from a head-max map attn [T, T].

    image: [n] row/column indices of the image's tokens; text: [m] rows of the text after the image.
    self_j = sum_v attn[v, j] / n over the image rows; cross_j = sum_t attn[t, j] over the text rows.
    """
    n = len(image)
    self_part = (attn[image][:, image] / n).sum(dim=0)
    cross_part = attn[text][:, image].sum(dim=0)
    return self_part, cross_part


def removal_order(scores: torch.Tensor) -> torch.Tensor:
    """Image tokens by ascending score (ties: lower index first); the first r are removed."""
    return torch.sort(scores, stable=True).indices


def image_and_text(origin: torch.Tensor, spans: list[tuple[int, int]], which: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (in `origin`'s order) of image `which`'s tokens and of the text tokens after it."""
    start, end = spans[which]
    in_any = torch.zeros_like(origin, dtype=torch.bool)
    for s, e in spans:
        in_any |= (origin >= s) & (origin < e)
    image = torch.nonzero((origin >= start) & (origin < end)).flatten()
    text = torch.nonzero((origin >= end) & ~in_any).flatten()
    return image, text


class LayerMaps:
    """The head-max attention maps a FitPrune dropper reads, fed by the LLM loop's calls.

    Layer i's map is over the tokens that entered layer i. A scoring layer that is not a drop layer
    is hooked by the probe and read from `captured`; one that is (consecutive removals) arrives with
    the tokens entering it before its own drop, so its map is built, on the kept rows only, right
    after that drop is decided (q/k are per token, so the kept rows' q/k are those layer i computes).
    """

    def __init__(self, score_layers: tuple[int, ...]):
        self.score_layers = score_layers
        self.pending: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # layer -> per row (map, origin)

    def of(self, layer: int, state: LoopState, captured: dict[int, Captured], geometry: HeadGeometry):
        """Per row (map [n, n], origin [n]) of `layer` over the row's current valid tokens."""
        if layer in self.pending:
            return self.pending.pop(layer)
        out = []
        for b in range(state.valid.shape[0]):
            rows = torch.nonzero(state.valid[b]).flatten()
            out.append((head_max_map(captured[layer], geometry, state.rope, rows, b), state.origin[b, rows]))
        return out

    def after_drop(self, layer: int, state: LoopState, captured: dict[int, Captured], geometry: HeadGeometry,
                   keep: list[torch.Tensor]) -> None:
        """At a drop layer that also scores: build its maps on the kept tokens for the next drop."""
        if layer in self.score_layers:
            self.pending[layer] = [(head_max_map(captured[layer], geometry, state.rope, k, b), state.origin[b, k])
                                   for b, k in enumerate(keep)]


class FitPruneDropper:
    """FitPrune for one batch, run by the LLM loop (`llava.model.llm_loop`).

    spans: per row, the [start, end) prefill positions of each image's tokens; budgets: K per image
    (None, or one that covers the image: the schedule is the recipe); num_layers: the LLM's depth.
    After the prefill, `kept` holds per image the finally kept positions within the image (raster
    order) and `stages` per image the kept positions after each removing layer.
    """

    q_rows = None  # every query row: the image's rows and the text rows after it
    needs_budget = False  # the schedule is the recipe: no --visual-token-num runs it too

    def __init__(self, spans, budgets, num_layers: int, reduction_ratio: float | None = None,
                 recipe: str | None = None, removed=None):
        self.spans, self.num_layers = spans, num_layers
        self.sizes = [e - s for row in spans for s, e in row]
        for n, k in zip(self.sizes, budgets):
            if k is not None and k < n:
                raise ValueError(f"fitprune takes its schedule from reduction_ratio=/recipe=, not from the budget: "
                                 f"got --visual-token-num {k} for an image of {n} tokens (pass {n})")
        recipes = {n: resolve_recipe(num_layers, n, reduction_ratio, recipe, removed) for n in sorted(set(self.sizes))}
        self.recipes = [recipes[n] for n in self.sizes]  # per image
        score = tuple(i for i in range(num_layers) if any(r.removed[i] for r in self.recipes))
        self.probe_layers = score  # layer i's attention ranks the tokens removed at layer i ...
        self.drop_layers = tuple(i + 1 for i in score)  # ... which are gone from layer i + 1 on
        self.maps = LayerMaps(score)
        self.stages: list[list[torch.Tensor]] = [[] for _ in self.sizes]
        self.scores: dict[int, list[torch.Tensor]] = {}  # scoring layer -> per image cross * self [n]

    @property
    def kept(self) -> list[torch.Tensor]:
        return [s[-1] if s else torch.arange(n) for s, n in zip(self.stages, self.sizes)]

    def keep(self, layer: int, state: LoopState, captured: dict[int, Captured], geometry: HeadGeometry):
        src = layer - 1
        maps = self.maps.of(src, state, captured, geometry)
        image_id, keep = 0, []
        for b, row in enumerate(self.spans):
            attn, origin = maps[b]
            rows = torch.nonzero(state.valid[b]).flatten()  # current tokens of the row, in map order
            take = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
            for which, (start, _) in enumerate(row):
                image, text = image_and_text(origin, row, which)
                self_part, cross_part = fitprune_parts(attn, image, text)
                scores = cross_part * self_part
                self.scores.setdefault(src, []).append(scores)
                count = self.recipes[image_id].removed[src]
                gone = image[removal_order(scores)[:min(count, len(image) - 1)]]
                take[gone] = False
                still = image[take[image]]
                self.stages[image_id].append(origin[still] - start)
                image_id += 1
            keep.append(rows[take])
        self.maps.after_drop(layer, state, captured, geometry, keep)
        return keep

    def report(self) -> dict:
        """Image tokens after each removing layer, per layer and layer-averaged, per image.

        `layers` are the first layers without the removed tokens (layer i + 1 for a removal at
        layer i); `layer` / `kept_after_layer` are the first of them (FastV's keys); `per_layer`
        lists the image tokens every layer saw.
        """
        counts = [[len(k) for k in s] for s in self.stages]
        layers = list(self.drop_layers)
        per_layer = []
        for n, c in zip(self.sizes, counts):
            seen, stage = [], dict(zip(layers, c))
            for i in range(self.num_layers):
                n = stage.get(i, n)
                seen.append(n)
            per_layer.append(seen)
        return {
            "layer": layers[0] if layers else None,
            "kept_after_layer": [c[0] if c else n for c, n in zip(counts, self.sizes)],
            "layer_averaged": [sum(p) / self.num_layers for p in per_layer],
            "layers": layers,
            "kept_per_stage": counts,
            "per_layer": per_layer,
            "recipe": [r.source for r in self.recipes],
        }


@register_method("fitprune", stage="in_llm", defaults={"reduction_ratio": None, "recipe": None, "removed": None},
                 llm_pruner=FitPruneDropper)
def fitprune(signals: VisionSignals, k: int, reduction_ratio: float | None = None, recipe: str | None = None,
             removed=None) -> Selection:
    """FitPrune: a per-layer removal recipe inside the LLM, ranked by self- and cross-attention."""
    raise ValueError("fitprune scores image tokens inside the LLM (generate with an LLM loop); "
                     "it has no pre-LLM selection")
