"""DivPrune: keep a max-min diverse subset of the visual tokens (greedy farthest-point on cosine distance).

Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models" (CVPR 2025,
arXiv 2503.02175, https://github.com/vbdi/divprune, rule in LLaVA/llava/model/llava_arch.py `DivPrune`).

Official rule (the default): the distances are 1 - cosine similarity of the projected LLM-input
embeddings (the `projected` signal: the model projects all N patches for this method). The first
pick is the column whose second-smallest distance is largest (the smallest being the token's
distance to itself: the most isolated token); every next pick is the token whose distance to its
nearest picked token is largest. Ties go to the lower index (argmax keeps the first maximum). The
picks are returned in raster order.

Options: `space=features` measures the vision tower's features before the projector instead (the
earlier FasterVLM variant; it needs no projection of the pruned tokens).
Differences from the official code: a picked token is never picked again (the official argmax runs
over all tokens, so exact duplicates of the picked ones could be picked twice).
"""

from __future__ import annotations

import torch

from ..base import SIGNAL_PROJECTED, Selection, VisionSignals
from ..registry import register_method
from ._common import check_signal, identity_selection, unit_rows

SPACES = ("projected", "features")


def max_min_diverse(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min picks on cosine distance, in pick order. features [B, N, D] -> [B, k]."""
    b, n, _ = features.shape
    unit = unit_rows(features)  # [B, N, D] float32
    dist = 1.0 - unit @ unit.transpose(1, 2)  # [B, N, N]; row i = distances from token i
    # Column j's second-smallest entry: its nearest other token (the smallest is j itself, ~0).
    first = dist.topk(min(2, n), dim=1, largest=False).values[:, -1].argmax(dim=-1)  # [B, N] -> [B]

    rows = torch.arange(b, device=features.device)
    picks = torch.empty(b, k, dtype=torch.long, device=features.device)
    picked = torch.zeros(b, n, dtype=torch.bool, device=features.device)
    to_set = torch.full((b, n), float("inf"), device=features.device)  # distance to the picked set
    pick = first
    for step in range(k):
        picks[:, step] = pick
        picked[rows, pick] = True
        to_set = torch.minimum(to_set, dist[rows, pick])  # [B, N]: min over the picked rows
        if step + 1 < k:
            pick = to_set.masked_fill(picked, float("-inf")).argmax(dim=-1)
    return picks


@register_method("divprune", needs=[SIGNAL_PROJECTED], defaults={"space": "projected"})
def divprune(signals: VisionSignals, k: int, space: str = "projected") -> Selection:
    """Max-min diverse subset of K tokens by cosine distance of the LLM-input embeddings, in raster order."""
    if space not in SPACES:
        raise ValueError(f"pruning method 'divprune': space={space!r} must be one of {list(SPACES)}; "
                         "fix --pruning-args")
    feats = signals.features
    if k >= feats.shape[1]:
        return identity_selection(feats)
    measured = feats
    if space == "projected":
        measured = check_signal(SIGNAL_PROJECTED, signals.projected, feats, ndim=3, patch_dim=1)  # [B, N, H]
    return Selection(indices=max_min_diverse(measured, k).sort(dim=-1).values)  # [B, N, H] -> [B, K]
