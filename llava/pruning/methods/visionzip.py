"""VisionZip: dominant tokens by [CLS] attention plus contextual tokens merged by key similarity.

Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models" (CVPR 2025,
arXiv 2412.04467, https://github.com/dvlab-research/VisionZip).

Rule (following the official code, on patches only):
1. Split the budget: C contextual tokens and D = K - C dominant ones. By default
   C = round(K * 10 / 64), at least 1 when K > 1 (the paper's 54 + 10 for 64, 108 + 20 for 128,
   162 + 30 for 192); `contextual` >= 0 sets C directly.
2. Dominant: the D patches with the highest [CLS] attention.
3. Contextual: the R = N - D other patches, in raster order, are split into C centres, taken every
   max(1, R // C) positions starting at the first, and the rest. Each of the rest joins the centre
   whose head-mean key is most cosine-similar to its own. A contextual token is the plain mean of
   the features of its centre and of every patch that joined it.

Selection: `indices` are the dominant patches and the centres, in raster order; `tokens` holds the
dominant patches' own features and, at each centre's position, the merged contextual token.
Differences from the official code: features here exclude [CLS], so the official extra dominant
slot spent on the [CLS] token itself goes to a patch; and the contextual tokens sit at their
centres' raster positions instead of after all dominant tokens.
"""

from __future__ import annotations

import math

import torch

from ..base import SIGNAL_CLS_ATTN, SIGNAL_KEYS, Selection, VisionSignals, gather_tokens, topk_raster
from ..registry import register_method
from ._common import check_signal, identity_selection, unit_rows

CONTEXTUAL_RATIO = 10 / 64  # the paper's 54 dominant + 10 contextual for a budget of 64


def split_budget(k: int, contextual: int = -1, contextual_ratio: float = CONTEXTUAL_RATIO) -> tuple[int, int]:
    """(dominant, contextual) counts for budget k; they sum to k."""
    if contextual >= 0:
        if contextual >= k:
            raise ValueError(f"visionzip: contextual={contextual} must be below the budget k={k}")
        return k - contextual, contextual
    n_ctx = int(math.floor(k * contextual_ratio + 0.5))  # round half up
    if k > 1:
        n_ctx = min(max(n_ctx, 1), k - 1)
    else:
        n_ctx = 0
    return k - n_ctx, n_ctx


@register_method(
    "visionzip",
    needs=[SIGNAL_CLS_ATTN, SIGNAL_KEYS],
    defaults={"contextual": -1, "contextual_ratio": CONTEXTUAL_RATIO},
)
def visionzip(
    signals: VisionSignals, k: int, contextual: int = -1, contextual_ratio: float = CONTEXTUAL_RATIO
) -> Selection:
    """Dominant patches by [CLS] attention plus contextual tokens merged around evenly spaced centres."""
    feats = signals.features
    cls_attn = check_signal(SIGNAL_CLS_ATTN, signals.cls_attn, feats, ndim=2, patch_dim=1)
    keys = check_signal(SIGNAL_KEYS, signals.keys, feats, ndim=3, patch_dim=1)
    b, n, d = feats.shape
    if k >= n:
        return identity_selection(feats)
    n_dom, n_ctx = split_budget(k, int(contextual), float(contextual_ratio))
    dominant = topk_raster(cls_attn, n_dom)  # [B, N] -> [B, n_dom]
    if n_ctx == 0:
        return Selection(indices=dominant)  # K = 1: nothing to merge

    # Remaining patches in raster order: every row has exactly R = N - D of them.
    is_rest = torch.ones(b, n, dtype=torch.bool, device=feats.device)
    is_rest.scatter_(1, dominant, False)
    n_rest = n - n_dom
    rest = torch.arange(n, device=feats.device).expand(b, n)[is_rest].view(b, n_rest)  # [B, N] -> [B, R]

    stride = max(1, n_rest // n_ctx)
    centre_pos = torch.arange(0, n_rest, stride, device=feats.device)[:n_ctx]  # [C] positions in `rest`
    is_centre = torch.zeros(n_rest, dtype=torch.bool, device=feats.device)
    is_centre[centre_pos] = True
    centres = rest[:, centre_pos]  # [B, C] patch indices
    others = rest[:, ~is_centre]  # [B, R - C] patch indices

    unit_keys = unit_rows(keys)  # [B, N, Dh] float32
    sim = gather_tokens(unit_keys, others) @ gather_tokens(unit_keys, centres).transpose(1, 2)  # [B, R-C, C]
    assign = sim.argmax(dim=-1)  # [B, R - C]: the centre each other patch joins

    # Plain mean of each centre's own features and those of the patches that joined it. A one-hot
    # matmul (rather than scatter_add) keeps the sums deterministic on every device.
    one_hot = torch.nn.functional.one_hot(assign, n_ctx).float()  # [B, R - C, C]
    sums = gather_tokens(feats, centres).float() + one_hot.transpose(1, 2) @ gather_tokens(feats, others).float()
    counts = 1.0 + one_hot.sum(dim=1)  # [B, C]
    merged = (sums / counts.unsqueeze(-1)).to(feats.dtype)  # [B, C, D]

    # Interleave dominant and contextual tokens in raster order of their positions.
    indices = torch.cat([dominant, centres], dim=1)  # [B, K]
    tokens = torch.cat([gather_tokens(feats, dominant), merged], dim=1)  # [B, K, D]
    order = indices.argsort(dim=-1)
    return Selection(indices=indices.gather(1, order), tokens=gather_tokens(tokens, order))
