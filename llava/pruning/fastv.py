"""FastV inside the LLM: from layer L on, keep only the K image tokens that the last prompt token
attended to most at layer L-1 (head mean), as in FastV (arXiv 2403.06764).

The scores come from the attention probe on layer L-1's own q/k (RoPE and GQA handled, float32),
for the last query row only: no eager attention and no [B, H, T, T] map. The LLM loop then removes
the pruned image tokens before layer L, so layers L.. really run on fewer tokens and cache fewer
keys; kept tokens keep their positions. FastV's own code blocks the pruned keys with the attention
mask instead, which gives the same outputs for the kept tokens (the tests check both).
Token accounting: layers < L see all N image tokens, layers >= L see K, so the layer-averaged count
is (L * N + (T - L) * K) / T for an LLM of T layers.

Two options follow FastV's evaluation scripts (pkunlp-icler/FastV, `src/FastV/inference/eval/`):
`reselect="step"` selects again at every generated token, from the newest token's attention at
layer L-1, with the whole sequence recomputed each step as its no-cache runs do (the default,
`"prefill"`, selects once at the prefill and decodes with the pruned KV cache, as its HF demo
with `use_cache=True` does); `shift=1` ranks the window its scripts rank with
`--fast-v-sys-length 36` on LLaVA-1.5's 35 system tokens: the image moved one token right, so the
image's first token is always kept and the text token after the image is ranked with the others.
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


RESELECT = ("prefill", "step")


class FastVDropper:
    """FastV for one batch, run by the LLM loop (`llava.model.llm_loop`).

    spans: per row, the [start, end) prefill positions of each image's tokens; budgets: K per image
    (reading order); num_layers: the LLM's depth. Before layer `layer` the loop keeps every text
    token and, per image, the K tokens of its ranked window that the last token attended to most at
    layer `layer` - 1 (head mean, from the probe, in float32). The window is the image's span moved
    by `shift` tokens (0: the image itself); tokens of the image outside the window are always kept.
    `reselect="step"` asks the loop's `generate` to rerun the whole sequence at every new token, so
    the selection is made again from the newest token (`selections` holds one entry per run).
    After the prefill, `kept` holds per image the kept positions within the image (sorted; the
    first selection) and `scores` the [B, T] attention row of the latest run.
    """

    q_rows = slice(-1, None)  # the last token (rows are left-padded)

    def __init__(self, spans, budgets, num_layers: int, layer: int = 2, ratio: float | None = None,
                 reselect: str = "prefill", shift: int = 0):
        if not 1 <= layer < num_layers:
            raise ValueError(f"fastv layer must be in [1, {num_layers - 1}] for a {num_layers}-layer LLM, got {layer}")
        if reselect not in RESELECT:
            raise ValueError(f"fastv reselect must be one of {list(RESELECT)}, got {reselect!r}")
        self.spans, self.layer, self.num_layers = spans, layer, num_layers
        self.reselect, self.shift = reselect, int(shift)
        self.drop_layers, self.probe_layers = (layer,), (layer - 1,)
        flat = [s for row in spans for s in row]
        self.budgets = [fastv_budget(e - s, k, ratio) for (s, e), k in zip(flat, budgets)]
        self.selections: list[list[torch.Tensor]] = []  # per run (prefill, then each re-selection): per image
        self.scores: torch.Tensor | None = None

    @property
    def kept(self) -> list[torch.Tensor]:
        """Per image, the positions within the image kept after the prefill's selection."""
        return self.selections[0] if self.selections else []

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
        keep, chosen_all = [], []
        for b, row in enumerate(self.spans):
            origin = state.origin[b]
            take = state.valid[b].clone()
            newest = int(origin[t - 1])
            for start, end in row:
                lo, hi = start + self.shift, min(end + self.shift, newest)  # the newest token is never ranked
                window = torch.nonzero((origin >= lo) & (origin < hi)).flatten()  # [W] in sequence order
                chosen = topk_raster(scores[b, window][None], next(budgets))[0]
                take[window] = False
                take[window[chosen]] = True
                image = (origin >= start) & (origin < end)
                chosen_all.append(origin[image & take] - start)  # kept positions within the image
            keep.append(torch.nonzero(take).flatten())
        self.selections.append(chosen_all)
        return keep

    def report(self) -> dict:
        """K after the pruning layer and the layer-averaged visual-token count, per image."""
        counts = [len(k) for k in self.kept]
        sizes = [e - s for row in self.spans for s, e in row]
        out = {
            "layer": self.layer,
            "kept_after_layer": counts,
            "layer_averaged": [layer_averaged_tokens(n, k, self.layer, self.num_layers)
                               for n, k in zip(sizes, counts)],
        }
        if self.reselect == "step":
            out["reselect"] = "step"
            out["selections"] = len(self.selections)
        return out


@register_method("fastv", stage="in_llm",
                 defaults={"layer": 2, "ratio": None, "reselect": "prefill", "shift": 0},
                 llm_pruner=FastVDropper)
def fastv(signals: VisionSignals, k: int, layer: int = 2, ratio: float | None = None, reselect: str = "prefill",
          shift: int = 0) -> Selection:
    """Keep the top-K image tokens by the last prompt token's attention at LLM layer L-1.

    Inside the LLM the scores arrive as `signals.scores` [B, N]. `ratio` (FastV's R, the pruned share)
    overrides K: K = round(N * (1 - R)). `reselect` and `shift` act inside the LLM (FastVDropper).
    """
    if signals.scores is None:
        raise ValueError("fastv scores image tokens inside the LLM; it has no pre-LLM signal to use")
    return Selection(indices=topk_raster(signals.scores, k))
