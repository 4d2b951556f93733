"""What every ViT vision adapter exposes the same way, read from its wrapped HF vision model."""

from __future__ import annotations

import torch


class PatchGridProperties:
    """dtype, device, width and patch grid of a wrapped HF vision model (`self.vision_tower`).

    The host is an adapter holding a CLIP- or SigLIP-style `vision_tower` (embeddings.patch_embedding,
    config.image_size / patch_size / hidden_size).
    """

    @property
    def config(self):
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


class QwenPatchProperties:
    """config, dtype, device, width and merge unit of a wrapped Qwen-VL ViT (`self.vision_tower`).

    The host holds a Qwen2.5-VL or Qwen3-VL vision model (patch_embed.proj, config.hidden_size and
    config.spatial_merge_size).
    """

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
