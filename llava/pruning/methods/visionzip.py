"""VisionZip: dominant tokens by [CLS] attention plus contextual tokens merged by key similarity.

Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language Models" (CVPR 2025,
arXiv 2412.04467, https://github.com/dvlab-research/VisionZip, LLaVA path in visionzip/clip_encoder.py).

Official rule (the default), for a budget of K = D + C tokens:
1. Split the budget: C contextual tokens and D dominant ones. By default C = round(K * 10 / 64),
   at least 1 when K > 1 (the paper's 54 + 10 for 64, 108 + 20 for 128, 162 + 30 for 192);
   `contextual` >= 0 sets C directly.
2. Dominant: the [CLS] token's own feature takes one of the D slots, and the D - 1 patches with the
   highest [CLS] attention take the others, in raster order.
3. Contextual: the R = N - (D - 1) other patches, in raster order, are split into C centres, taken
   every max(1, R // C) positions starting at the first, and the rest. Each of the rest joins the
   centre whose head-mean key is most cosine-similar to its own (ties: the first centre). A
   contextual token is its centre's feature plus the mean of the features that joined it (the
   centre alone when none did).
4. Order: [CLS], the dominant patches, then the contextual tokens in the order of their centres.

Selection: `tokens` holds the K tokens in that order; `token_patch` says where each stands (-1 for
[CLS], a contextual token at its centre); `indices` are the dominant patches and the centres,
sorted (K - 1 of them: [CLS] is no patch).

Options (variants, not the official code): `cls_token=false` spends every dominant slot on a patch
(D dominant patches, K patches in `indices`); `contextual_merge=mean_all` makes a contextual token
the plain mean of its centre and the joined patches; `order=raster` puts the patch tokens in the
raster order of their positions (after [CLS]). The earlier FasterVLM variant is
`cls_token=false,contextual_merge=mean_all,order=raster`.
"""

from __future__ import annotations

import math

import torch

from ..base import SIGNAL_CLS_ATTN, SIGNAL_CLS_FEATURE, SIGNAL_KEYS, Selection, VisionSignals, gather_tokens, topk_raster
from ..registry import register_method
from ._common import check_signal, identity_selection, unit_rows

CONTEXTUAL_RATIO = 10 / 64  # the paper's 54 dominant + 10 contextual for a budget of 64
MERGES = ("centre_plus_mean", "mean_all")
ORDERS = ("official", "raster")


def split_budget(k: int, contextual: int = -1, contextual_ratio: float = CONTEXTUAL_RATIO) -> tuple[int, int]:
    """(dominant, contextual) counts for budget k; they sum to k. Dominant includes the [CLS] slot."""
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


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"pruning method 'visionzip': {name}={value!r} must be one of {list(allowed)}; "
                         "fix --pruning-args")
    return value


@register_method(
    "visionzip",
    needs=[SIGNAL_CLS_ATTN, SIGNAL_KEYS, SIGNAL_CLS_FEATURE],
    defaults={"contextual": -1, "contextual_ratio": CONTEXTUAL_RATIO, "cls_token": True,
              "contextual_merge": "centre_plus_mean", "order": "official"},
)
def visionzip(
    signals: VisionSignals,
    k: int,
    contextual: int = -1,
    contextual_ratio: float = CONTEXTUAL_RATIO,
    cls_token: bool = True,
    contextual_merge: str = "centre_plus_mean",
    order: str = "official",
) -> Selection:
    """[CLS] plus dominant patches by [CLS] attention, then contextual tokens merged around evenly spaced centres."""
    merge = _choice("contextual_merge", contextual_merge, MERGES)
    order = _choice("order", order, ORDERS)
    feats = signals.features
    cls_attn = check_signal(SIGNAL_CLS_ATTN, signals.cls_attn, feats, ndim=2, patch_dim=1)
    keys = check_signal(SIGNAL_KEYS, signals.keys, feats, ndim=3, patch_dim=1)
    b, n, d = feats.shape
    if k >= n:
        return identity_selection(feats)
    n_dom, n_ctx = split_budget(k, int(contextual), float(contextual_ratio))
    n_dom_patches = n_dom - 1 if cls_token else n_dom
    dominant = topk_raster(cls_attn, n_dom_patches)  # [B, N] -> [B, D'] raster order
    head_tokens, head_patch = [], []
    if cls_token:
        cls = signals.cls_feature
        if cls is None or cls.shape != (b, d):
            raise ValueError(f"visionzip: the 'cls_feature' signal must be [B, D] = {(b, d)}, "
                             f"got {None if cls is None else tuple(cls.shape)}")
        head_tokens.append(cls.to(feats.dtype).unsqueeze(1))  # [B, 1, D]
        head_patch.append(torch.full((b, 1), -1, dtype=torch.long, device=feats.device))

    centres = dominant[:, :0]
    merged = feats[:, :0]
    if n_ctx > 0:
        # Remaining patches in raster order: every row has exactly R = N - D' of them.
        is_rest = torch.ones(b, n, dtype=torch.bool, device=feats.device)
        is_rest.scatter_(1, dominant, False)
        n_rest = n - n_dom_patches
        rest = torch.arange(n, device=feats.device).expand(b, n)[is_rest].view(b, n_rest)  # [B, N] -> [B, R]

        stride = max(1, n_rest // n_ctx)
        centre_pos = torch.arange(0, n_rest, stride, device=feats.device)[:n_ctx]  # [C] positions in `rest`
        is_centre = torch.zeros(n_rest, dtype=torch.bool, device=feats.device)
        is_centre[centre_pos] = True
        centres = rest[:, centre_pos]  # [B, C] patch indices
        others = rest[:, ~is_centre]  # [B, R - C] patch indices

        unit_keys = unit_rows(keys)  # [B, N, Dh] float32
        sim = gather_tokens(unit_keys, others) @ gather_tokens(unit_keys, centres).transpose(1, 2)  # [B, R-C, C]
        assign = sim.argmax(dim=-1)  # [B, R - C]: the centre each other patch joins (first on ties)

        # A one-hot matmul (rather than scatter_add) keeps the sums deterministic on every device.
        one_hot = torch.nn.functional.one_hot(assign, n_ctx).float()  # [B, R - C, C]
        joined = one_hot.transpose(1, 2) @ gather_tokens(feats, others).float()  # [B, C, D] sums
        counts = one_hot.sum(dim=1).unsqueeze(-1)  # [B, C, 1]
        centre_feats = gather_tokens(feats, centres).float()  # [B, C, D]
        if merge == "centre_plus_mean":
            merged = centre_feats + joined / counts.clamp(min=1.0)
        else:  # mean_all
            merged = (centre_feats + joined) / (1.0 + counts)
        merged = merged.to(feats.dtype)

    patches = torch.cat([dominant, centres], dim=1)  # [B, D' + C]
    patch_tokens = torch.cat([gather_tokens(feats, dominant), merged], dim=1)  # [B, D' + C, D]
    if order == "raster":
        perm = patches.argsort(dim=-1)
        patches, patch_tokens = patches.gather(1, perm), gather_tokens(patch_tokens, perm)
    tokens = torch.cat([*head_tokens, patch_tokens], dim=1)  # [B, K, D]
    token_patch = torch.cat([*head_patch, patches], dim=1)  # [B, K]
    return Selection(indices=patches.sort(dim=-1).values, tokens=tokens, token_patch=token_patch)
