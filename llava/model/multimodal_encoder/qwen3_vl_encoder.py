"""Qwen3-VL's ViT as a vision adapter: the stock blocks, signals from the probe, mergers on kept groups only.

The processor flattens each image into P = h x w patches of 16 px (two frames per temporal patch),
ordered so that every 2 x 2 merge group is 4 consecutive patches; merged token j of an image is
patches 4j..4j+3, in raster order over the (h/2) x (w/2) merged grid. The adapter runs the tower's
own blocks (attention within each image, its 2-D rotary embedding) and returns, per image, the
LLM's units before their mergers:
- `features`: the last block's output, grouped: [1, M, 4*D] (M = P / 4 merged tokens);
- `deepstack`: the outputs of the `deepstack_visual_indexes` blocks, grouped the same way;
- the signals a method names, one value per merged token (scores summed over the group's 4 patches).
The patch merger (the projector) and the DeepStack mergers then run on the kept groups only
(`merge`, `merge_deepstack`), so a pruned token loses its DeepStack features with it.

Signals (no [CLS] token in this ViT): `mean_attn` is the attention each patch receives from all
patches of its image, averaged over heads and queries, at `signal_layer` (default: the last block,
whose output the merger reads), with the block's own rotary embedding on q and k. It is computed by
`llava.probe.received_attention` from the block's captured fused qkv, 256 queries at a time, never
as a full map. A method that asks for `cls_attn` (fastervlm, vispruner) gets it as a stand-in
(`cls_stand_in`). `keys` are the head-mean keys, averaged over the group. Signals that need the
[CLS] token itself (`cls_attn_layers`, `cls_feature`) raise MissingSignalError.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from llava import compat
from llava.probe import Captured, HeadGeometry, QKProbe, received_attention
from llava.pruning.base import SIGNAL_CLS_ATTN, SIGNAL_KEYS, SIGNAL_MEAN_ATTN, VisionSignals
from llava.pruning.signals import compute_signals, signal_spec

from .registry import register_vision_adapter
from .siglip_encoder import MissingSignalError

CLS_STAND_INS = ("mean_attn",)
# The signals this tower computes itself (others are the model's, or refused).
TOWER_SIGNALS = (SIGNAL_MEAN_ATTN, SIGNAL_KEYS)
QUERY_CHUNK = 256


@dataclass
class Qwen3VLImage:
    """One image through the tower: its merged units before the mergers, and its signals.

    signals.features: [1, M, U*D] (U = merge**2 patches per unit); deepstack: per DeepStack layer [M, U*D];
    grid: (t, h, w) in patches.
    """

    signals: VisionSignals
    deepstack: list[torch.Tensor]
    grid: tuple[int, int, int]

    @property
    def num_tokens(self) -> int:
        return self.signals.features.shape[1]


@register_vision_adapter("qwen3_vl_vision")
class Qwen3VLVisionTower(nn.Module):
    """Qwen3VLVisionModel run block by block, with probe signals and mergers for kept groups."""

    def __init__(self, vision_model: nn.Module, signal_layer: int = -1, cls_stand_in: str = "mean_attn",
                 image_processor=None, name: str = "") -> None:
        super().__init__()
        if cls_stand_in not in CLS_STAND_INS:
            raise ValueError(f"cls_stand_in={cls_stand_in!r}: must be one of {list(CLS_STAND_INS)}")
        depth = len(vision_model.blocks)
        if not -depth <= signal_layer < depth:
            raise ValueError(f"signal_layer={signal_layer} is out of range for a {depth}-block Qwen3-VL ViT")
        self.vision_tower = vision_model
        self.signal_layer = signal_layer % depth
        self.cls_stand_in = cls_stand_in
        self.image_processor = image_processor
        self.vision_tower_name = name
        self.select_layer = -1  # the merger reads the last block
        self.select_feature = "patch"
        self.vision_tower.requires_grad_(False)

    @classmethod
    def from_config(cls, config, select_layer: int = -1, select_feature: str = "patch",
                    attn_implementation: str = "sdpa", cls_stand_in: str = "mean_attn") -> "Qwen3VLVisionTower":
        """A randomly initialised tower of the given shape (weights are loaded afterwards)."""
        from transformers import Qwen3VLVisionConfig, Qwen3VLVisionModel

        if isinstance(config, dict):
            config = Qwen3VLVisionConfig(**{k: v for k, v in config.items() if k != "model_type"})
        config._attn_implementation = attn_implementation
        _check_select(select_layer, select_feature)
        return cls(Qwen3VLVisionModel(config), cls_stand_in=cls_stand_in)

    @classmethod
    def from_pretrained(cls, path: str, select_layer: int = -1, select_feature: str = "patch",
                        allow_missing_weights: bool = False, **load_kwargs) -> "Qwen3VLVisionTower":
        """The ViT of a Qwen3VLForConditionalGeneration folder (`model.visual.*` tensors; missing ones are a
        CheckpointError unless allowed)."""
        from llava.model.builder import read_config
        from llava.model.checkpoint import checkpoint_tensors, strip_prefix
        from llava.model.checkpoint_checks import check_loading_info

        tower = cls.from_config(dict(read_config(path)["vision_config"]), select_layer, select_feature)
        state = strip_prefix(checkpoint_tensors(path, "model.visual."), "model.visual.")
        missing, unexpected = tower.vision_tower.load_state_dict(state, strict=False)
        check_loading_info(path, {"missing_keys": missing, "unexpected_keys": unexpected}, allow_missing_weights,
                           what="the Qwen3-VL vision tower")
        if "dtype" in load_kwargs:
            tower.to(dtype=load_kwargs["dtype"])
        tower.vision_tower_name = str(path)
        return tower

    # ---- geometry --------------------------------------------------------------------------------
    @property
    def config(self):
        return self.vision_tower.config

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.patch_embed.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.patch_embed.proj.weight.device

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def merge_unit(self) -> int:
        """Patches per merged token (2 x 2)."""
        return self.config.spatial_merge_size ** 2

    @property
    def deepstack_layers(self) -> list[int]:
        return list(self.config.deepstack_visual_indexes)

    @property
    def num_patches_per_side(self) -> int:
        """Side of the learned position grid the positions are resampled from (48 in the released models)."""
        return self.vision_tower.num_grid_per_side

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side ** 2

    # ---- signals ---------------------------------------------------------------------------------
    def tower_signals(self, needs: frozenset[str] | set[str]) -> frozenset[str]:
        """The signals the tower computes for `needs`: `cls_attn` becomes its stand-in; [CLS] ones are refused."""
        missing = sorted(n for n in needs if n != SIGNAL_CLS_ATTN and signal_spec(n).needs_prefix)
        if missing:
            raise MissingSignalError(f"signal(s) {missing} need a [CLS] token, which Qwen3-VL's ViT lacks")
        computed = frozenset(self.cls_stand_in if n == SIGNAL_CLS_ATTN else n for n in needs)
        other = sorted(computed - set(TOWER_SIGNALS))
        if other:
            raise MissingSignalError(f"signal(s) {other} are not computed by Qwen3-VL's ViT "
                                     f"(it gives {list(TOWER_SIGNALS)})")
        return computed

    def _signals(self, needs, computed, cap: Captured, rope, bounds: list[tuple[int, int]]) -> list[dict]:
        """Per image {name: [1, M, ...]} from the signal block's captured q/k [P, D] (all images packed)."""
        attn = self.vision_tower.blocks[self.signal_layer].attn
        geometry = HeadGeometry.of(attn)
        unit = self.merge_unit
        out = []
        for start, end in bounds:
            values = {}
            k = cap.k[None, start:end]  # [1, N, D]: this image's patches only (attention stays within an image)
            if SIGNAL_MEAN_ATTN in computed:
                q = cap.q[None, start:end]
                cos, sin = (t[None, start:end] for t in rope)  # [1, N, Dh]
                patch = received_attention(q, k, geometry, rope=(cos, sin), chunk=QUERY_CHUNK)  # [1, N]
                values[SIGNAL_MEAN_ATTN] = patch.view(1, -1, unit).sum(-1)  # [1, M]: a group's 4 patches
            if SIGNAL_KEYS in computed:
                keys = compute_signals({SIGNAL_KEYS}, {0: Captured(None, k)}, geometry, 0, prefix=0)[SIGNAL_KEYS]
                values[SIGNAL_KEYS] = keys.view(1, -1, unit, keys.shape[-1]).mean(2)  # [1, N, Dh] -> [1, M, Dh]
            if SIGNAL_CLS_ATTN in needs:
                values[SIGNAL_CLS_ATTN] = values[self.cls_stand_in]
                if self.cls_stand_in not in needs:
                    del values[self.cls_stand_in]
            out.append(values)
        return out

    # ---- forward ---------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, images: torch.Tensor, grid_thw: torch.Tensor,
                needs: frozenset[str] | set[str] = frozenset()) -> list[Qwen3VLImage]:
        """images [P, C*T*p*p] (the processor's `pixel_values`, all images packed), grid_thw [n, 3] -> n images."""
        computed = self.tower_signals(needs)
        vm = self.vision_tower
        grid_thw = torch.as_tensor(grid_thw, device=self.device)
        if grid_thw.ndim != 2 or grid_thw.shape[1] != 3:
            raise ValueError(f"grid_thw must be [images, 3] (t, h, w per image), got shape {tuple(grid_thw.shape)}")
        sizes = grid_thw.prod(dim=-1).tolist()
        if images.shape[0] != sum(sizes):
            raise ValueError(f"pixel_values hold {images.shape[0]} patches but image_grid_thw {grid_thw.tolist()} "
                             f"needs {sum(sizes)}; pass the processor's pixel_values and image_grid_thw together")
        hidden, block_kwargs = compat.qwen3_vision_prelude(vm, images.to(self.device), grid_thw)  # [P, D]
        probe = QKProbe({self.signal_layer: vm.blocks[self.signal_layer].attn} if computed else {},
                        keep_q=SIGNAL_MEAN_ATTN in computed)
        deep = []
        with probe.attached():
            for i, block in enumerate(vm.blocks):
                hidden = block(hidden, **block_kwargs)
                if i in self.deepstack_layers:
                    deep.append(hidden)
        d, unit = hidden.shape[-1], self.merge_unit
        bounds, start = [], 0
        for n in sizes:
            bounds.append((start, start + n))
            start += n
        values = self._signals(needs, computed, probe.captured.get(self.signal_layer), block_kwargs[
            "position_embeddings"], bounds) if computed else [{} for _ in bounds]
        images_out = []
        for (s, e), grid, vals in zip(bounds, grid_thw.tolist(), values):
            feats = hidden[s:e].reshape(1, -1, unit * d)  # [N, D] -> [1, M, U*D]
            images_out.append(Qwen3VLImage(VisionSignals(feats, **vals), [h[s:e].reshape(-1, unit * d) for h in deep],
                                           tuple(grid)))
        return images_out

    # ---- mergers (the projector) -----------------------------------------------------------------
    def merge(self, groups: torch.Tensor) -> torch.Tensor:
        """The patch merger on merged units: groups [K, U*D] -> LLM tokens [K, H]."""
        return self.vision_tower.merger(groups.reshape(-1, self.hidden_size))  # norms each patch, then [K, U*D]

    def merge_deepstack(self, groups: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each DeepStack layer's merger on its units: L x [K, U*D] -> L x [K, H]."""
        return [merger(g.reshape(-1, self.hidden_size)) for merger, g in
                zip(self.vision_tower.deepstack_merger_list, groups)]


def _check_select(select_layer: int, select_feature: str) -> None:
    if select_layer != -1 or select_feature not in ("patch", "full"):
        raise ValueError(f"Qwen3-VL's merger reads the last block's patches: select_layer must be -1 and "
                         f"select_feature 'patch', got {select_layer!r}, {select_feature!r}")
