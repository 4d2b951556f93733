"""FasterVLM: keep the K patches that the [CLS] token attends to most (selected layer, head mean)."""

from __future__ import annotations

from ..base import SIGNAL_CLS_ATTN, Selection, VisionSignals, topk_raster
from ..registry import register_method
from ..signals import CLS_STAND_IN_ARG, STAND_IN_AUTO
from ._common import check_signal


@register_method("fastervlm", needs=[SIGNAL_CLS_ATTN], signal_options={CLS_STAND_IN_ARG: STAND_IN_AUTO})
def fastervlm(signals: VisionSignals, k: int) -> Selection:
    """Top-K patches by head-mean [CLS] attention of the selected vision layer, in raster order."""
    cls_attn = check_signal(SIGNAL_CLS_ATTN, signals.cls_attn, signals.features, ndim=2, patch_dim=1)
    return Selection(indices=topk_raster(cls_attn, k))  # [B, N] -> [B, K]
