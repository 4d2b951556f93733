"""VTC-CLS: keep the K patches with the highest [CLS] attention summed over a range of vision layers.

Wang et al., "[CLS] Token Tells Everything Needed for Training-free Efficient MLLMs" (arXiv 2412.05819,
https://github.com/THU-MIG/VTC-CLS). The official code sums the head-mean [CLS]->patch attention rows of
the vision layers from `start_layer` up to the LLaVA feature layer (the penultimate one), then keeps the
top-K patches in raster order. Its evaluation scripts take the start layer as an argument whose default
is 16 (0-based layer index), which is our default.
"""

from __future__ import annotations

from ..base import SIGNAL_CLS_ATTN_LAYERS, Selection, VisionSignals, topk_raster
from ..registry import register_method
from ._common import check_signal, identity_selection


@register_method("vtc_cls", needs=[SIGNAL_CLS_ATTN_LAYERS], defaults={"start_layer": 16})
def vtc_cls(signals: VisionSignals, k: int, start_layer: int = 16) -> Selection:
    """Top-K patches by [CLS] attention summed over layers start_layer..selected, in raster order.

    `cls_attn_layers` [B, L, N] holds one row per vision layer 0..L-1, the last being the selected
    layer. `start_layer` is a 0-based layer index; a negative value counts from the end (-1 = the
    selected layer only). It is clamped to [0, L-1], so a start beyond the selected layer uses that
    layer alone.
    """
    feats = signals.features
    layers = check_signal(SIGNAL_CLS_ATTN_LAYERS, signals.cls_attn_layers, feats, ndim=3, patch_dim=2)
    n_layers = layers.shape[1]
    if k >= feats.shape[1]:
        return identity_selection(feats)
    start = start_layer + n_layers if start_layer < 0 else start_layer
    start = min(max(int(start), 0), n_layers - 1)
    scores = layers[:, start:].float().sum(dim=1)  # [B, L, N] -> [B, N]
    return Selection(indices=topk_raster(scores, k))  # [B, N] -> [B, K]
