"""FastV inside the LLM: from layer L on, keep only the K image tokens that the last prompt token
attended to most at layer L-1 (head mean), as in FastV (arXiv 2403.06764).

The scores come from the attention probe on layer L-1's own q/k (RoPE and GQA handled, float32),
for the last query row only: no eager attention and no [B, H, T, T] map. The LLM loop then removes
the pruned image tokens before layer L, so layers L.. really run on fewer tokens and cache fewer
keys; kept tokens keep their positions. FastV's own code blocks the pruned keys with the attention
mask instead, which gives the same outputs for the kept tokens (the tests check both).
Token accounting: layers < L see all N image tokens, layers >= L see K, so the layer-averaged count
is (L * N + (T - L) * K) / T for an LLM of T layers.
"""

from __future__ import annotations

import torch

from llava.probe import Captured, HeadGeometry, head_mean_rows

from .base import Selection, VisionSignals, topk_raster
from .in_llm import LoopState
from .registry import register_method


def fastv_budget(n: int, k: int | None, ratio: float | None) -> int:
    """The K FastV keeps for an image of n tokens."""
    if ratio is not None:
        if not 0 <= ratio < 1:
            raise ValueError(f"fastv ratio (the pruned share R) must be in [0, 1), got {ratio}")
        return max(1, round(n * (1 - ratio)))
    return n if k is None else min(k, n)


def layer_averaged_tokens(n: int, k: int, layer: int, num_layers: int) -> float:
    """Visual tokens per LLM layer, averaged over all layers."""
    layer = min(layer, num_layers)
    return (layer * n + (num_layers - layer) * k) / num_layers


class FastVDropper:
    """FastV for one batch, run by the LLM loop (`llava.model.llm_loop`).

    spans: per row, the [start, end) prefill positions of each image's tokens; budgets: K per image
    (reading order); num_layers: the LLM's depth. Before layer `layer` the loop keeps every text
    token and, per image, the K image tokens that the last prompt token attended to most at layer
    `layer` - 1 (head mean, from the probe, in float32). After the prefill, `kept` holds per image
    the kept positions within the image (raster order) and `scores` the [B, T] attention row.
    """

    q_rows = slice(-1, None)  # the last prompt token (rows are left-padded)

    def __init__(self, spans, budgets, num_layers: int, layer: int = 2, ratio: float | None = None):
        if not 1 <= layer < num_layers:
            raise ValueError(f"fastv layer must be in [1, {num_layers - 1}] for a {num_layers}-layer LLM, got {layer}")
        self.spans, self.layer, self.num_layers = spans, layer, num_layers
        self.drop_layers, self.probe_layers = (layer,), (layer - 1,)
        flat = [s for row in spans for s in row]
        self.budgets = [fastv_budget(e - s, k, ratio) for (s, e), k in zip(flat, budgets)]
        self.kept: list[torch.Tensor] = []
        self.scores: torch.Tensor | None = None

    def keep(self, layer: int, state: LoopState, captured: dict[int, Captured], geometry: HeadGeometry):
        t = state.valid.shape[1]
        if not bool((state.last_index() == t - 1).all()):
            raise ValueError("fastv needs left-padded rows (the last prompt token at the end of every row)")
        cap = captured[layer - 1]
        last = torch.tensor([t - 1], device=state.valid.device)
        scores = head_mean_rows(cap.q, cap.k, geometry, q_positions=last, rope=state.rope,
                                key_mask=state.valid, causal=True)[:, 0]  # [B, 1, T] -> [B, T]
        self.scores = scores
        budgets = iter(self.budgets)
        keep = []
        for b, row in enumerate(self.spans):
            origin = state.origin[b]
            take = state.valid[b].clone()
            for start, end in row:
                image = torch.nonzero((origin >= start) & (origin < end)).flatten()  # [N] in raster order
                chosen = topk_raster(scores[b, image][None], next(budgets))[0]
                take[image] = False
                take[image[chosen]] = True
                self.kept.append(chosen)
            keep.append(torch.nonzero(take).flatten())
        return keep

    def report(self) -> dict:
        """K after the pruning layer and the layer-averaged visual-token count, per image."""
        counts = [len(k) for k in self.kept]
        sizes = [e - s for row in self.spans for s, e in row]
        return {
            "layer": self.layer,
            "kept_after_layer": counts,
            "layer_averaged": [layer_averaged_tokens(n, k, self.layer, self.num_layers)
                               for n, k in zip(sizes, counts)],
        }


@register_method("fastv", stage="in_llm", defaults={"layer": 2, "ratio": None}, llm_pruner=FastVDropper)
def fastv(signals: VisionSignals, k: int, layer: int = 2, ratio: float | None = None) -> Selection:
    """Keep the top-K image tokens by the last prompt token's attention at LLM layer L-1.

    Inside the LLM the scores arrive as `signals.scores` [B, N]. `ratio` (FastV's R, the pruned share)
    overrides K: K = round(N * (1 - R)).
    """
    if signals.scores is None:
        raise ValueError("fastv scores image tokens inside the LLM; it has no pre-LLM signal to use")
    return Selection(indices=topk_raster(signals.scores, k))
