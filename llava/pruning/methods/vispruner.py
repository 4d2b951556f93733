"""VisPruner: important tokens by [CLS] attention, the rest of the budget filled with diverse tokens.

Zhang et al., "Beyond Text-Visual Attention: Exploiting Visual Cues for Effective Token Pruning in
VLMs" (ICCV 2025, arXiv 2412.01818 v2, https://github.com/Theia-4869/VisPruner).

Rule (following the official algorithm):
1. K_imp = int(K * important_ratio) patches with the highest head-mean [CLS] attention are kept.
2. The other N - K_imp patches (the residual), ordered by descending attention, are thinned until
   K_div = K - K_imp remain. Each round splits the residual alternately into A (positions 0, 2, 4, ...)
   and B (positions 1, 3, 5, ...), scores every A token by its highest cosine similarity (of
   L2-normalised features) to any B token, and drops the r most similar A tokens, where
   r = min(step, R - K_div) (step = 8 as in the official code). The new residual is the kept A tokens
   (by descending score) followed by B, so duplicates are removed a few at a time.
3. The kept tokens are returned in raster order.
Sorting is stable, so ties resolve to the earlier position and the result is deterministic.
"""

from __future__ import annotations

import torch

from ..base import SIGNAL_CLS_ATTN, Selection, VisionSignals
from ..registry import register_method
from ..signals import CLS_STAND_IN_ARG, STAND_IN_AUTO
from ._common import check_signal, identity_selection, unit_rows


@register_method(
    "vispruner", needs=[SIGNAL_CLS_ATTN], defaults={"important_ratio": 0.5, "step": 8},
    signal_options={CLS_STAND_IN_ARG: STAND_IN_AUTO},
)
def vispruner(signals: VisionSignals, k: int, important_ratio: float = 0.5, step: int = 8) -> Selection:
    """Important tokens by [CLS] attention plus diverse tokens by iterative duplicate removal."""
    feats = signals.features
    cls_attn = check_signal(SIGNAL_CLS_ATTN, signals.cls_attn, feats, ndim=2, patch_dim=1)
    if not 0.0 <= float(important_ratio) <= 1.0:
        raise ValueError(f"vispruner: important_ratio must be in [0, 1], got {important_ratio}")
    if int(step) < 1:
        raise ValueError(f"vispruner: step must be >= 1, got {step}")
    b, n, _ = feats.shape
    if k >= n:
        return identity_selection(feats)

    n_imp = int(k * float(important_ratio))
    n_div = k - n_imp
    order = torch.sort(cls_attn.float(), dim=-1, descending=True, stable=True).indices  # [B, N]
    important = order[:, :n_imp]  # [B, K_imp]
    residual = order[:, n_imp:]  # [B, N - K_imp], by descending attention
    if n_div == 0:
        residual = residual[:, :0]

    unit = unit_rows(feats)  # [B, N, D] float32
    rows = torch.arange(b, device=feats.device).unsqueeze(-1)
    while residual.shape[1] > n_div:
        r_len = residual.shape[1]
        a_idx, b_idx = residual[:, 0::2], residual[:, 1::2]  # [B, ceil(R/2)], [B, floor(R/2)]
        drop = min(int(step), r_len - n_div, a_idx.shape[1])
        sim = unit[rows, a_idx] @ unit[rows, b_idx].transpose(1, 2)  # [B, |A|, |B|]
        score = sim.max(dim=-1).values  # [B, |A|]: closest match of each A token in B
        keep_a = torch.sort(score, dim=-1, descending=True, stable=True).indices[:, drop:]  # [B, |A| - r]
        residual = torch.cat([a_idx.gather(1, keep_a), b_idx], dim=1)  # [B, R - r]

    kept = torch.cat([important, residual], dim=1)  # [B, K]
    return Selection(indices=kept.sort(dim=-1).values)
