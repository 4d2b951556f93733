"""SparseVLM inside the LLM: text raters score the image tokens at a few layers, the low-scored ones
leave and part of them come back merged into cluster tokens (Zhang et al., arXiv 2410.04417; official
code Gumpest/SparseVLMs, tag v1.5: `llava/model/language_model/modelling_sparse_llama.py`
(`LlamaDynamicvitModel.forward`), `score.py` (`attn_postprocess_topk`, the schedules) and `utils.py`
(`cluster_and_merge`)).

The rule, as the official inference runs it (v1):

- Raters, once, from the LLM's input embeddings: for each image token, a softmax over its dot
  products with the tokens after the image (the instruction); averaged over the image tokens this
  gives one weight per text token, and the text tokens weighted above the mean are the raters.
- After each sparse layer L (default 2, 6, 15), layer L's own attention (causal softmax over all
  keys, float32 here), averaged over heads and over the rater rows, scores the current visual
  tokens. The top k_s stay in their order (k_s from the schedule of the budget K:
  64 -> 66/30/17, 96 -> 238/48/26, 128 -> 303/110/36, 192 -> 300/200/110).
- Recycling (merge): of the pruned tokens, the top 30 % + 1 by score (in descending score order)
  are clustered into int(M / 10) + 1 tokens by density-peak clustering on their hidden states
  leaving layer L (`cluster_merge`); each cluster token is the mean of its members. They go
  right after the kept visual tokens and count as visual tokens at the next sparse layer.
- The survivors are renumbered to consecutive positions; decode steps continue from there.

The loop drops before layer L + 1 what the official code removes from layer L's output, so layer
L itself still runs on (and caches) every token, as there. Budgets the official table lacks get a
derived schedule (`schedule_for`), and K >= N prunes nothing; see docs/METHODS.md.

`version=2` is SparseVLM+ (the main branch's `USE_VERSION=2_0`): the same raters, but each score is
divided by the RoPE-only attention logit of its query/key positions (`rope_gravity`), only the
`heads` heads (14) with the most rater-to-image attention are averaged, nothing is recycled, the
survivors keep their positions, and its own schedules apply.
"""

from __future__ import annotations

import torch

from llava.probe import Captured, HeadGeometry, apply_rope, attention_rows

from .base import Selection, VisionSignals
from .in_llm import INSERTED, Inserted, LoopState
from .pdrop import as_tuple, stage_layer_average
from .registry import register_method

# The official v1 schedules: visual tokens kept at layers 2, 6, 15 per retained-token budget
# (score.py `sparse_token_dict`: 64/128/192 at tag v1.5; the main branch's v1 mode adds 96).
OFFICIAL_SCHEDULES = {64: (66, 30, 17), 96: (238, 48, 26), 128: (303, 110, 36), 192: (300, 200, 110)}
# SparseVLM+ (main branch score.py with USE_VERSION=2_0).
OFFICIAL_SCHEDULES_V2 = {64: (66, 34, 20), 96: (246, 54, 28), 128: (238, 108, 60), 192: (300, 200, 118)}
RECYCLED_SHARE = 0.3  # top 30 % (+1) of the pruned tokens are recycled
CLUSTER_DIVISOR = 10  # into int(M / 10) + 1 clusters


def schedule_for(k: int, version: int = 1) -> tuple[int, ...]:
    """Visual tokens kept at each sparse layer for the budget K.

    An official budget: its schedule. Another (the official code has none and fails): the schedule
    of the nearest official budget (ties: the smaller) scaled by K / K_official, rounded, at least 1,
    so the schedule keeps its shape and its layer average moves with K.
    """
    table = OFFICIAL_SCHEDULES if version == 1 else OFFICIAL_SCHEDULES_V2
    if k in table:
        return table[k]
    ref = min(table, key=lambda r: (abs(r - k), r))
    return tuple(max(1, round(c * k / ref)) for c in table[ref])


def text_raters(visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Which text tokens rate the image: visual [V, H], text [Nt, H] (LLM-input embeddings) -> [Nt] bool.

    Each visual token's softmax over its (unscaled) dot products with the text tokens, averaged over
    the visual tokens; the text tokens above the mean weight rate. If none is (all equal), all rate.
    """
    h = visual.shape[-1]
    weights = attention_rows(visual[None], text[None], HeadGeometry(1, 1, h, 1.0))[0, 0]  # [V, Nt]
    relevance = weights.mean(dim=0)  # [Nt]
    raters = relevance > relevance.mean()
    return raters if raters.any() else torch.ones_like(raters)


def _descending(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest values, largest first; ties go to the lower index."""
    return torch.sort(values.float(), descending=True, stable=True).indices[:k]


def cluster_merge(x: torch.Tensor, clusters: int) -> torch.Tensor:
    """Density-peak clustering of tokens x [M, H] into `clusters` mean tokens [C, H] (official order).

    Distances d_ij = |x_i - x_j| / sqrt(H); density_i = exp(-mean of the squared distances to its
    `clusters` nearest tokens, itself included); delta_i = the distance to the nearest denser token
    (the largest distance for the densest); the centres are the `clusters` largest delta * density,
    in that order; every token joins its nearest centre (a centre itself), and a cluster token is
    its members' sum over (count + 1e-6). The official code adds 1e-6 * U(0, 1) noise to the
    densities to break ties; here ties go to the lower index. Computed in float32.
    """
    m, h = x.shape
    xf = x.float()
    dist = torch.cdist(xf[None], xf[None], compute_mode="donot_use_mm_for_euclid_dist")[0] / h**0.5  # [M, M]
    nearest = torch.topk(dist, k=clusters, dim=-1, largest=False).values  # [M, C]
    density = (-(nearest**2).mean(dim=-1)).exp()  # [M]
    denser = density[None, :] > density[:, None]  # [i, j]: j is denser than i
    delta = torch.where(denser, dist, dist.max()).min(dim=-1).values  # [M]
    centres = _descending(delta * density, clusters)  # [C]
    assign = dist[centres].argmin(dim=0)  # [M] nearest centre (the first of equal ones)
    assign[centres] = torch.arange(clusters, device=x.device)
    count = torch.zeros(clusters, device=x.device).index_add_(0, assign, torch.ones(m, device=x.device))
    weight = 1.0 / (count + 1e-6)  # [C]
    merged = torch.zeros(clusters, h, device=x.device).index_add_(0, assign, xf * weight[assign, None])
    return merged.to(x.dtype)


def rope_gravity(rope: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor, scale: float) -> torch.Tensor:
    """SparseVLM+'s gravity term: the attention logit an all-ones query and key would have at these
    positions (RoPE only). rope: float32 (cos, sin) [1, T, Dh] of the row; rows: [R] query indices.
    -> [R, T] (the same for every head)."""
    cos, sin = rope
    ones = torch.ones(1, 1, cos.shape[1], cos.shape[2], device=cos.device)  # [1, 1, T, Dh]
    roped = apply_rope(ones, cos, sin)[0, 0]  # [T, Dh]
    return (roped[rows] @ roped.T) * scale


def check_layers(layers, num_layers: int) -> tuple[int, ...]:
    layers = as_tuple(layers, "layers", int)
    if (list(layers) != sorted(set(layers)) or not all(0 <= l < num_layers - 1 for l in layers)
            or any(b - a < 2 for a, b in zip(layers, layers[1:]))):
        raise ValueError(f"sparsevlm layers must increase, at least 2 apart, within [0, {num_layers - 2}] for a "
                         f"{num_layers}-layer LLM (tokens leave after each), got {list(layers)}")
    return layers


class SparseVLMDropper:
    """SparseVLM (v1) for one batch, run by the LLM loop (`llava.model.llm_loop`).

    spans: per row, the [start, end) prefill positions of each image's tokens; budgets: K per image
    (the retained-token budget the schedule is derived from; K >= N prunes nothing); num_layers:
    the LLM's depth. layers: the sparse layers (tokens leave after each); keep: visual tokens kept
    at each (default: from K); merge: recycle pruned tokens into cluster tokens (default: for
    version 1); version: 1 (SparseVLM) or 2 (SparseVLM+); heads: SparseVLM+'s heads. After the prefill,
    `kept` holds per image the kept positions within the image (raster order, recycled tokens aside)
    and `stages` per image the visual tokens after each sparse layer (recycled ones included).
    """

    q_rows = None  # the raters' rows are picked per row after the capture
    needs_budget = False  # keep= alone runs it too

    def __init__(self, spans, budgets, num_layers: int, layers=(2, 6, 15), keep=None, merge: bool | None = None,
                 version: int = 1, heads: int = 14):
        if version not in (1, 2):
            raise ValueError(f"sparsevlm version={version!r} is not one of 1 (SparseVLM, the default) or 2 (SparseVLM+)")
        if merge is not None and not isinstance(merge, bool):
            raise ValueError(f"sparsevlm merge={merge!r} must be true or false")
        if not isinstance(heads, int) or heads < 1:
            raise ValueError(f"sparsevlm heads={heads!r} must be a positive int (SparseVLM+'s attention heads)")
        self.version, self.heads = version, heads
        merge = version == 1 if merge is None else merge  # v1 recycles; v2 does not
        if merge and version == 2:
            raise ValueError("sparsevlm merge=true recycles into renumbered positions (version=1); SparseVLM+ "
                             "(version=2) keeps positions and does not recycle")
        self.renumber_positions = version == 1  # v1 renumbers the survivors, v2 keeps their positions
        self.layers = check_layers(layers, num_layers)
        self.drop_layers = tuple(l + 1 for l in self.layers)  # the official code prunes layer L's output
        self.probe_layers = self.layers
        self.spans, self.num_layers, self.merge = spans, num_layers, bool(merge)
        self.sizes = [e - s for row in spans for s, e in row]
        if keep is not None:
            keep = as_tuple(keep, "keep", int)
            if len(keep) != len(self.layers) or not all(k >= 1 for k in keep):
                raise ValueError(f"sparsevlm needs one positive keep count per sparse layer: layers="
                                 f"{list(self.layers)} but keep={list(keep)}")
        self.schedules: list[tuple[int, ...] | None] = []  # per image; None: not pruned
        for n, k in zip(self.sizes, budgets):
            if k is not None and k >= n:
                self.schedules.append(None)
            elif keep is not None:
                self.schedules.append(keep)
            elif k is None:
                raise ValueError("sparsevlm needs its retained-token budget (--visual-token-num 64/128/192) or "
                                 "keep=a:b:c in --pruning-args")
            elif len(self.layers) != len(OFFICIAL_SCHEDULES[64]):
                raise ValueError(f"sparsevlm derives {len(OFFICIAL_SCHEDULES[64])} keep counts from the budget, but "
                                 f"layers={list(self.layers)}: give keep= with one count per layer")
            else:
                self.schedules.append(schedule_for(k, version))
        self.raters: list[torch.Tensor] = []  # per row: prefill positions of the rater tokens
        self.stages: list[list[int]] = [[] for _ in self.sizes]
        self.recycled: list[list[int]] = [[] for _ in self.sizes]
        self.recycled_tokens: list[list[torch.Tensor]] = [[] for _ in self.sizes]  # per stage [C, H]
        self._kept: list[torch.Tensor | None] = [None] * len(self.sizes)
        self._pending: list[Inserted | None] | None = None

    @property
    def kept(self) -> list[torch.Tensor]:
        return [torch.arange(n) if k is None else k for k, n in zip(self._kept, self.sizes)]

    def begin(self, state: LoopState) -> None:
        """Pick each row's raters from the input embeddings (text = the tokens after its last image)."""
        self.raters = []
        for b, row in enumerate(self.spans):
            if not row:
                self.raters.append(torch.empty(0, dtype=torch.long))
                continue
            origin = state.origin[b]
            after = row[-1][1]
            text = torch.nonzero(origin >= after).flatten()
            if len(text) == 0:
                raise ValueError("sparsevlm rates image tokens by the instruction after the image, but a prompt "
                                 "has no text after its last image")
            image = torch.cat([torch.nonzero((origin >= s) & (origin < e)).flatten() for s, e in row])
            raters = text_raters(state.hidden[b, image], state.hidden[b, text])
            self.raters.append(origin[text[raters]])

    def _region(self, origin: torch.Tensor, image_id: int, start: int, end: int) -> torch.Tensor:
        """Current indices [V] of an image's visual tokens (its own that remain, its recycled ones), in order."""
        return torch.nonzero(((origin >= start) & (origin < end)) | (origin == INSERTED - image_id)).flatten()

    def keep(self, layer: int, state: LoopState, captured: dict[int, Captured], geometry: HeadGeometry):
        stage = self.drop_layers.index(layer)
        cap = captured[self.layers[stage]]
        image_id = 0
        keep, pending = [], []
        for b, row in enumerate(self.spans):
            origin = state.origin[b]
            take = state.valid[b].clone()
            merged, before = [], []
            if any(self.schedules[image_id + j] is not None for j in range(len(row))):
                rows = torch.nonzero(torch.isin(origin, self.raters[b].to(origin.device))).flatten()  # [R]
                rope = tuple(r[b:b + 1] for r in state.rope)
                attn = attention_rows(cap.q[b:b + 1, rows], cap.k[b:b + 1], geometry, q_positions=rows, rope=rope,
                                      key_mask=state.valid[b:b + 1], causal=True)[0]  # [H, R, T]
                if self.version == 2:
                    if self.heads > attn.shape[0]:
                        raise ValueError(f"sparsevlm heads={self.heads} exceeds the LLM's {attn.shape[0]} attention "
                                         "heads (lower heads=)")
                    attn = attn / rope_gravity(rope, rows, geometry.scale)  # [H, R, T] / [R, T]
                else:
                    scores = attn.mean(dim=(0, 1))  # [T]: mean over heads, then over the raters
            for start, end in row:
                schedule = self.schedules[image_id]
                if schedule is None:
                    self.stages[image_id].append(end - start)
                    self.recycled[image_id].append(0)
                    image_id += 1
                    continue
                region = self._region(origin, image_id, start, end)  # [V]
                if self.version == 2:  # the heads that look at this image most, then their mean
                    top_heads = _descending(attn[:, :, region].sum(dim=(1, 2)), self.heads)
                    scores = attn[top_heads].mean(dim=(0, 1))  # [T]
                v, k = len(region), schedule[stage]
                if k >= v:  # nothing to prune at this stage
                    chosen = region
                    extra = None
                else:
                    order = _descending(scores[region], v)
                    chosen = region[order[:k].sort().values]
                    pruned = region[order[k:].sort().values]  # sequence order, as the official code lists them
                    take[pruned] = False
                    extra = self._recycle(state.hidden[b], pruned, scores[pruned]) if self.merge else None
                if extra is not None:
                    self.recycled_tokens[image_id].append(extra)
                    merged.append((extra, image_id))
                    before.append(chosen[-1])
                kept_origin = origin[chosen]
                self._kept[image_id] = kept_origin[kept_origin >= 0] - start
                recycled = int((kept_origin == INSERTED - image_id).sum()) + (0 if extra is None else len(extra))
                self.stages[image_id].append(len(chosen) + (0 if extra is None else len(extra)))
                self.recycled[image_id].append(recycled)
                image_id += 1
            kept = torch.nonzero(take).flatten()
            keep.append(kept)
            if merged:  # each image's cluster tokens go right after its kept visual tokens
                slots = [torch.full((len(t),), int((kept <= last).sum()), dtype=torch.long)
                         for (t, _), last in zip(merged, before)]
                tags = [torch.full((len(t),), INSERTED - image, dtype=torch.long) for t, image in merged]
                pending.append(Inserted(torch.cat([t for t, _ in merged]), torch.cat(slots), origin=torch.cat(tags)))
            else:
                pending.append(None)
        self._pending = pending
        return keep

    def _recycle(self, hidden: torch.Tensor, pruned: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Cluster tokens [C, H] from the best-scored pruned ones (hidden [T, H]; pruned [P]; scores [P])."""
        m = int(len(pruned) * RECYCLED_SHARE) + 1
        top = pruned[_descending(scores, m)]  # descending score, as the official topk
        return cluster_merge(hidden[top], len(top) // CLUSTER_DIVISOR + 1)

    def inserted(self, layer: int, state: LoopState) -> list[Inserted | None]:
        pending, self._pending = self._pending, None
        return pending

    def report(self) -> dict:
        """Visual tokens after each sparse layer (recycled ones included) and the layer-averaged count.

        `layers` are the first layers that see each stage's count (sparse layer + 1); `sparse_layers`
        the official layer numbers; `recycled_per_stage` how many of the counted tokens are recycled.
        """
        counts = [s or [n] * len(self.layers) for s, n in zip(self.stages, self.sizes)]
        recycled = [r or [0] * len(self.layers) for r in self.recycled]
        return {
            "layer": self.drop_layers[0],
            "kept_after_layer": [c[0] for c in counts],
            "layer_averaged": [stage_layer_average(n, c, self.drop_layers, self.num_layers)
                               for n, c in zip(self.sizes, counts)],
            "layers": list(self.drop_layers),
            "sparse_layers": list(self.layers),
            "kept_per_stage": counts,
            "recycled_per_stage": recycled,
        }


@register_method("sparsevlm", stage="in_llm",
                 defaults={"layers": (2, 6, 15), "keep": None, "merge": None, "version": 1, "heads": 14},
                 llm_pruner=SparseVLMDropper)
def sparsevlm(signals: VisionSignals, k: int, **kwargs) -> Selection:
    """SparseVLM: text-rated progressive pruning with token recycling inside the LLM (no pre-LLM rule)."""
    raise ValueError("sparsevlm scores image tokens inside the LLM (generate with an LLM loop); "
                     "it has no pre-LLM selection")
