"""DivPrune: keep a max-min diverse subset of the patches (greedy farthest-point on cosine distance).

Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal Models" (CVPR 2025,
arXiv 2503.02175, https://github.com/vbdi/divprune).

Rule (following the official code): distance = 1 - cosine similarity of the features. The first pick
is the most isolated patch, the one whose nearest other patch is farthest away; every next pick is
the unpicked patch whose distance to its nearest picked patch is largest. Ties go to the lower
index (argmax keeps the first maximum). The picks are returned in raster order.
Difference from the official code: it measures the projected LLM-input embeddings; here the
features are the vision tower's (before the projector), as the selector contract provides.
"""

from __future__ import annotations

import torch

from ..base import Selection, VisionSignals
from ..registry import register_method
from ._common import identity_selection, unit_rows


def max_min_diverse(features: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy max-min picks on cosine distance, in pick order. features [B, N, D] -> [B, k]."""
    b, n, _ = features.shape
    unit = unit_rows(features)  # [B, N, D] float32
    dist = 1.0 - unit @ unit.transpose(1, 2)  # [B, N, N]
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    nearest_other = dist.masked_fill(eye, float("inf")).min(dim=-1).values  # [B, N]
    first = nearest_other.argmax(dim=-1)  # [B]

    rows = torch.arange(b, device=features.device)
    picks = torch.empty(b, k, dtype=torch.long, device=features.device)
    picked = torch.zeros(b, n, dtype=torch.bool, device=features.device)
    to_set = torch.full((b, n), float("inf"), device=features.device)  # distance to the picked set
    pick = first
    for step in range(k):
        picks[:, step] = pick
        picked[rows, pick] = True
        to_set = torch.minimum(to_set, dist[rows, pick])  # [B, N]
        if step + 1 < k:
            pick = to_set.masked_fill(picked, float("-inf")).argmax(dim=-1)
    return picks


@register_method("divprune")
def divprune(signals: VisionSignals, k: int) -> Selection:
    """Max-min diverse subset of K patches by cosine distance of features, in raster order."""
    feats = signals.features
    if k >= feats.shape[1]:
        return identity_selection(feats)
    return Selection(indices=max_min_diverse(feats, k).sort(dim=-1).values)  # [B, N, D] -> [B, K]
