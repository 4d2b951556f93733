"""Qwen2.5-VL's ViT as a vision adapter: the stock blocks, signals from the probe, per merged token.

The ViT reads dynamic-resolution images as packed 14 px patches (`pixel_values` [P, C * 2 * 14 * 14],
`image_grid_thw` [n_img, 3], as the processor gives them, each 2 x 2 merge group contiguous). It
reorders the merge groups by 112 px windows, runs window attention in every block except the
full-attention ones (`fullatt_block_indexes`), and the patch merger (its projector) maps each group of
4 patches to one LLM token. This adapter runs the stock blocks (`llava.compat` knows their keywords)
and hands back, per image, the *group* features (the 4 patches' last-block outputs side by side,
[G, 4 * D], before the merger) in raster order of the merged grid, so a selection of merged tokens
is a selection of groups and the merger (`project`) runs on the kept groups only.

Signals (per merged token, raster order):
- `mean_attn`: the attention each patch receives at the signal layer, averaged over the queries and
  heads that attend to it there, summed over its merge group. At a full-attention block every patch
  of the image is a query (the scores of an image sum to 1). At a window block each window's rows
  are weighted by the window's share of the image's patches, so the scores are the image-wide mean
  of a block-sparse map (they also sum to 1). q/k come from the block's fused `qkv` through the
  probe, rotated by the block's own 2-D rotary tables; rows in chunks of 256 queries.
- `cls_attn` asked by a [CLS]-ranking method (fastervlm, vispruner) gets `mean_attn` (the stand-in,
  as on SigLIP); the [CLS] signals proper (`cls_feature`, `cls_attn_layers`) and the per-patch
  `keys` are refused with MissingSignalError naming the family.

The default signal layer is the last full-attention block: the one whose output the merger reads
and the deepest layer where a patch's received attention compares all regions of the image (a window
block only ranks a patch within its 8 x 8-patch window).

Shapes: P patches of all images, G_i merge groups (LLM tokens) of image i, D ViT width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llava import compat
from llava.probe import HeadGeometry, QKProbe, received_attention
from llava.pruning.base import SIGNAL_CLS_ATTN, SIGNAL_MEAN_ATTN, VisionSignals
from llava.pruning.signals import signal_spec

from ..input_checks import check_grid, check_patches, check_pixels
from .patch_grid import QwenPatchProperties
from .registry import register_vision_adapter
from .siglip_encoder import MissingSignalError

FAMILY = "qwen2_5_vl"
# What this tower computes; `cls_attn` is answered with the stand-in.
TOWER_SIGNALS = (SIGNAL_MEAN_ATTN,)


@dataclass
class QwenImages:
    """One tower run: per image a VisionSignals of batch 1 (features [1, G_i, 4 * D], signals [1, G_i]),
    and each image's merged grid (h, w) in LLM tokens."""

    signals: list[VisionSignals]
    grids: list[tuple[int, int]]

    @property
    def counts(self) -> list[int]:
        return [h * w for h, w in self.grids]


@register_vision_adapter("qwen2_5_vl_vision")
class Qwen25VisionTower(QwenPatchProperties, nn.Module):
    """Qwen2.5-VL's vision transformer with probe signals per merged token; the merger is `project`.

    signal_layer: the block whose attention gives `mean_attn` (default: the last full-attention block);
    cls_stand_in: the signal handed to [CLS]-attention methods (only `mean_attn` exists here).
    """

    def __init__(self, vision_model: nn.Module, signal_layer: int | None = None, image_processor=None,
                 name: str = "", cls_stand_in: str = "mean_attn") -> None:
        super().__init__()
        self.vision_tower = vision_model
        self.vision_tower.requires_grad_(False)
        self.image_processor = image_processor
        self.vision_tower_name = name
        if cls_stand_in not in TOWER_SIGNALS:  # the only stand-in this adapter computes
            raise ValueError(f"cls_stand_in={cls_stand_in!r}: must be one of {list(TOWER_SIGNALS)}")
        self.cls_stand_in = cls_stand_in
        self.signal_layer = signal_layer
        self.select_layer = -1  # the features are the last block's output (what the merger reads)
        self.select_feature = "patch"

    @property
    def signal_layer(self) -> int:
        """The block whose attention gives `mean_attn` (0-based); set it to an index (negative counts from
        the end) or None for the default, the last full-attention block."""
        return self._signal_layer

    @signal_layer.setter
    def signal_layer(self, layer: int | None) -> None:
        vm = self.vision_tower
        depth = len(vm.blocks)
        full = list(vm.fullatt_block_indexes)
        chosen = (full[-1] if full else depth - 1) if layer is None else layer
        if isinstance(chosen, bool) or not isinstance(chosen, int) or not -depth <= chosen < depth:
            raise ValueError(f"{FAMILY}: signal_layer={layer!r} must be a block index in [-{depth}, {depth}) "
                             f"(full-attention blocks: {full})")
        self._signal_layer = chosen % depth

    @classmethod
    def from_config(cls, config, signal_layer: int | None = None, attn_implementation: str = "sdpa"):
        """A randomly initialised tower of the given vision config (weights are loaded afterwards)."""
        from transformers import Qwen2_5_VLVisionConfig
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

        if isinstance(config, dict):
            config = Qwen2_5_VLVisionConfig(**{k: v for k, v in config.items() if k != "model_type"})
        config._attn_implementation = attn_implementation
        return cls(Qwen2_5_VisionTransformerPretrainedModel._from_config(config), signal_layer)

    # ---- parts -----------------------------------------------------------------------------------
    @property
    def full_attention(self) -> bool:
        """Whether the signal layer attends over the whole image (a full-attention block)."""
        return self.signal_layer in self.vision_tower.fullatt_block_indexes

    def project(self, groups: torch.Tensor) -> torch.Tensor:
        """The patch merger on groups [K, 4 * D] -> LLM tokens [K, H_llm]."""
        merger = self.vision_tower.merger
        dtype = merger.mlp[0].weight.dtype
        return merger(groups.reshape(-1, groups.shape[-1] // self.merge_unit).to(dtype))

    # ---- signals ---------------------------------------------------------------------------------
    def tower_signals(self, needs: frozenset[str] | set[str]) -> frozenset[str]:
        """The signals the tower computes for `needs` (`cls_attn` becomes `mean_attn`); others are refused."""
        refused = sorted(n for n in needs if n != SIGNAL_CLS_ATTN and n not in TOWER_SIGNALS)
        if refused:
            cls = [n for n in refused if signal_spec(n).needs_prefix]
            other = [n for n in refused if n not in cls]
            reasons = ([f"signal(s) {cls} need a [CLS] token, which Qwen2.5-VL's ViT lacks"] if cls else []) + \
                ([f"signal(s) {other} are not given by its adapter (it gives {list(TOWER_SIGNALS)})"] if other else [])
            raise MissingSignalError("; ".join(reasons))
        return frozenset(SIGNAL_MEAN_ATTN if n == SIGNAL_CLS_ATTN else n for n in needs)

    def _received(self, q: torch.Tensor, k: torch.Tensor, layout: compat.QwenVisionLayout,
                  geometry: HeadGeometry) -> list[torch.Tensor]:
        """Per image: the mean attention each patch receives at the signal layer, [P_i] in window order."""
        cos, sin = layout.rope
        bounds = layout.cu_seqlens.tolist()
        windows = bounds if self.full_attention else layout.cu_window_seqlens.tolist()
        out = []
        for s, e in zip(bounds[:-1], bounds[1:]):
            scores = torch.zeros(e - s, dtype=torch.float32, device=q.device)
            for ws, we in zip(windows[:-1], windows[1:]):
                if ws < s or we > e or we <= ws:
                    continue
                rope = (cos[None, ws:we], sin[None, ws:we])  # [1, n, Dh]
                got = received_attention(q[None, ws:we], k[None, ws:we], geometry, rope=rope)[0]  # [n]
                scores[ws - s:we - s] = got * ((we - ws) / (e - s))  # the window's share of the image's queries
            out.append(scores)
        return out

    # ---- forward ---------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                needs: frozenset[str] | set[str] = frozenset()) -> QwenImages:
        """Encode packed patches [P, C*2*14*14] of images `grid_thw` [n_img, 3] -> QwenImages.

        The group features equal the stock ViT's last-block output, and `project` of them equals its
        merged output (`pooler_output`), image by image in raster order.
        """
        computed = self.tower_signals(needs)
        vm = self.vision_tower
        grid_thw = check_grid(grid_thw, "qwen2_5_vl").to(self.device)
        check_pixels(pixel_values, "qwen2_5_vl")
        check_patches(pixel_values, grid_thw, vm.patch_embed, "qwen2_5_vl")
        hidden = vm.patch_embed(pixel_values.to(device=self.device, dtype=self.dtype))  # [P, D]
        layout = compat.qwen_vision_layout(vm, hidden, grid_thw)
        hidden = vm.permute_input_for_window_attn(hidden, layout.window_index, seq_len=hidden.shape[0])
        probe = QKProbe({self.signal_layer: vm.blocks[self.signal_layer].attn} if computed else {})
        with probe.attached():
            for i, block in enumerate(vm.blocks):
                cu = layout.cu_seqlens if i in vm.fullatt_block_indexes else layout.cu_window_seqlens
                hidden = compat.call_qwen_vision_block(block, hidden, cu, layout.rope)
        unit = self.merge_unit
        groups = hidden.view(-1, unit * hidden.shape[-1])  # [G, 4D] in window order
        order = torch.argsort(layout.window_index)  # raster group g sits at window slot order[g]
        groups = groups[order]
        received = None
        if computed:
            cap = probe.captured[self.signal_layer]
            geometry = HeadGeometry.of(vm.blocks[self.signal_layer].attn)
            received = self._received(cap.q, cap.k, layout, geometry)
        merge = vm.spatial_merge_size
        signals, grids, start = [], [], 0
        for i, (t, h, w) in enumerate(grid_thw.tolist()):
            n = t * (h // merge) * (w // merge)
            values = {}
            if received is not None:
                per_group = received[i].view(-1, unit).sum(dim=-1)  # [G_i] in the image's window order
                local = layout.window_index[start:start + n]  # the image's groups fill these window slots
                raster = torch.empty_like(per_group)
                raster[local - start] = per_group  # window slot j holds raster group local[j]
                values[SIGNAL_MEAN_ATTN] = raster[None]
                if SIGNAL_CLS_ATTN in needs:  # the stand-in (CLS_STAND_INS: mean_attn only)
                    values[SIGNAL_CLS_ATTN] = raster[None]
                if SIGNAL_MEAN_ATTN not in needs:
                    del values[SIGNAL_MEAN_ATTN]
            signals.append(VisionSignals(groups[start:start + n][None], **values))
            grids.append((t * (h // merge), w // merge))
            start += n
        return QwenImages(signals, grids)
