"""CLIP vision tower that runs only up to the selected layer and returns pruning signals.

LLaVA uses the patch features of the penultimate CLIP layer (`mm_vision_select_layer = -2`). This
tower runs the embeddings, the pre-layernorm and the encoder layers up to and including that
layer, never the ones after it. When a pruning method asks for it, the [CLS]->patch attention of a
layer is computed from that layer's own q/k projections (captured by forward hooks) for the [CLS]
query row only: the layers themselves keep SDPA/flash attention and no [B, H, T, T] map is stored.

Shapes: B images, T = 1 + N tokens ([CLS] + N patches), D width, H heads, Dh = D / H.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.pruning.base import (
    KNOWN_SIGNALS,
    SIGNAL_CLS_ATTN,
    SIGNAL_CLS_ATTN_LAYERS,
    SIGNAL_KEYS,
    VisionSignals,
)


def resolve_hidden_state_index(select_layer: int, num_layers: int) -> int:
    """Index into CLIP's `hidden_states` tuple (0 = embeddings, i = output of layer i-1)."""
    idx = select_layer if select_layer >= 0 else num_layers + 1 + select_layer
    if not 0 <= idx <= num_layers:
        raise ValueError(f"mm_vision_select_layer={select_layer} is out of range for a {num_layers}-layer tower")
    return idx


class _QKCapture:
    """Forward hooks that keep the q ([CLS] row only) and k projections of chosen encoder layers."""

    def __init__(self) -> None:
        self.q: dict[int, torch.Tensor] = {}  # layer -> [B, D]
        self.k: dict[int, torch.Tensor] = {}  # layer -> [B, T, D]

    @contextmanager
    def attach(self, layers: nn.ModuleList, which: list[int]) -> Iterator["_QKCapture"]:
        handles = []
        for i in which:
            attn = layers[i].self_attn
            handles.append(attn.q_proj.register_forward_hook(self._keep(self.q, i, cls_only=True)))
            handles.append(attn.k_proj.register_forward_hook(self._keep(self.k, i, cls_only=False)))
        try:
            yield self
        finally:
            for h in handles:
                h.remove()

    @staticmethod
    def _keep(store: dict, layer: int, cls_only: bool):
        def hook(_module, _inputs, output):
            store[layer] = output[:, 0] if cls_only else output

        return hook


def cls_attention_row(q_cls: torch.Tensor, k: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    """Head-mean attention of the [CLS] query over the patches, computed in float32.

    q_cls: [B, D], k: [B, T, D] -> [B, T-1] (the [CLS] key column is dropped after the softmax).
    """
    b, t, d = k.shape
    dh = d // num_heads
    q = q_cls.float().view(b, num_heads, 1, dh)  # [B, H, 1, Dh]
    keys = k.float().view(b, t, num_heads, dh).transpose(1, 2)  # [B, H, T, Dh]
    probs = (torch.matmul(q, keys.transpose(-1, -2)) * scale).softmax(dim=-1)  # [B, H, 1, T]
    return probs[:, :, 0, 1:].mean(dim=1)  # [B, H, T] -> [B, N]


class CLIPVisionTower(nn.Module):
    """LLaVA's CLIP vision tower, truncated at the selected layer, with on-demand pruning signals."""

    def __init__(
        self,
        vision_model: CLIPVisionModel,
        select_layer: int = -2,
        select_feature: str = "patch",
        image_processor=None,
        name: str = "",
    ) -> None:
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', not {select_feature!r}")
        self.vision_tower = vision_model
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.image_processor = image_processor
        self.vision_tower_name = name
        self.vision_tower.requires_grad_(False)
        self.num_run_layers = resolve_hidden_state_index(select_layer, vision_model.config.num_hidden_layers)

    @classmethod
    def from_pretrained(
        cls, path: str, select_layer: int = -2, select_feature: str = "patch", **load_kwargs
    ) -> "CLIPVisionTower":
        """Load CLIP weights and its image processor from a local dir (or a cached hub id)."""
        from llava.mm_utils import load_image_processor

        model = CLIPVisionModel.from_pretrained(path, **load_kwargs)
        return cls(model, select_layer, select_feature, load_image_processor(path), name=str(path))

    @classmethod
    def from_config(cls, config: CLIPVisionConfig | dict, select_layer: int = -2, select_feature: str = "patch"):
        """A randomly initialised tower of the given shape (weights are loaded afterwards)."""
        if isinstance(config, dict):
            config = CLIPVisionConfig(**config)
        return cls(CLIPVisionModel(config), select_layer, select_feature)

    # ---- properties LLaVA code relies on -------------------------------------------------------
    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.embeddings.patch_embedding.weight.device

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2

    # ---- forward -----------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, images: torch.Tensor, needs: frozenset[str] | set[str] = frozenset()) -> VisionSignals:
        """Encode B images [B, 3, S, S] into the selected layer's features plus the requested signals.

        Returns VisionSignals with features [B, N, D] (N = patches, +1 with 'cls_patch'),
        and cls_attn [B, N_patches] / cls_attn_layers [B, L_run, N_patches] / keys [B, N_patches, Dh]
        when named in `needs`.
        """
        unknown = set(needs) - KNOWN_SIGNALS
        if unknown:
            raise ValueError(f"unknown vision signals requested: {sorted(unknown)}")
        n_run = self.num_run_layers
        if needs and n_run == 0:
            raise ValueError("attention signals need at least one encoder layer (select_layer points at the embeddings)")

        last = n_run - 1
        probe = set()
        if SIGNAL_CLS_ATTN in needs or SIGNAL_KEYS in needs:
            probe.add(last)
        if SIGNAL_CLS_ATTN_LAYERS in needs:
            probe.update(range(n_run))

        vm = self.vision_tower
        hidden = vm.embeddings(images.to(device=self.device, dtype=self.dtype))  # [B, T, D]
        hidden = vm.pre_layrnorm(hidden)
        capture = _QKCapture()
        with capture.attach(vm.encoder.layers, sorted(probe)):
            for layer in vm.encoder.layers[:n_run]:
                hidden = layer(hidden, None)

        features = hidden[:, 1:] if self.select_feature == "patch" else hidden  # [B, T, D] -> [B, N, D]
        signals = VisionSignals(features=features)
        if not probe:
            return signals

        heads = self.config.num_attention_heads
        scale = (self.config.hidden_size // heads) ** -0.5
        if SIGNAL_CLS_ATTN in needs:
            signals.cls_attn = cls_attention_row(capture.q[last], capture.k[last], heads, scale)
        if SIGNAL_CLS_ATTN_LAYERS in needs:
            rows = [cls_attention_row(capture.q[i], capture.k[i], heads, scale) for i in range(n_run)]
            signals.cls_attn_layers = torch.stack(rows, dim=1)  # L x [B, N] -> [B, L, N]
        if SIGNAL_KEYS in needs:
            k = capture.k[last][:, 1:]  # [B, N, D]
            signals.keys = k.view(*k.shape[:2], heads, -1).mean(dim=2)  # [B, N, H, Dh] -> [B, N, Dh]
        return signals
