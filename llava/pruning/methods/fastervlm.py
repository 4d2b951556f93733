"""FasterVLM: keep the K patches that the [CLS] token attends to most (selected layer, head mean)."""

from __future__ import annotations

from ..base import SIGNAL_CLS_ATTN, Selection, VisionSignals, topk_raster
from ..registry import register_method


@register_method("fastervlm", needs=[SIGNAL_CLS_ATTN])
def fastervlm(signals: VisionSignals, k: int) -> Selection:
    """Top-K patches by head-mean [CLS] attention of the selected vision layer, in raster order."""
    if signals.cls_attn is None:
        raise ValueError("fastervlm needs the 'cls_attn' signal from the vision tower")
    return Selection(indices=topk_raster(signals.cls_attn, k))  # [B, N] -> [B, K]
