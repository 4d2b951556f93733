"""The parts accessors shared by the composed Qwen-VL models (Qwen2.5-VL, Qwen3-VL).

The host holds `vision_tower` (a Qwen ViT adapter wrapping the stock vision model), `language_model`
(the stock text model) and `_generation_config`; the patch merger is its projector.
"""

from __future__ import annotations

import torch
from torch import nn


class QwenComposedParts:
    """Tower, text model, embeddings, projector, generation config, dtype and device of a composed Qwen-VL."""

    def get_vision_tower(self) -> nn.Module:
        return self.vision_tower

    def get_model(self) -> nn.Module:
        return self.language_model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings()

    @property
    def mm_projector(self) -> nn.Module:
        """The projector: the ViT's patch merger (2 x 2 patches -> 1 LLM token)."""
        return self.vision_tower.vision_tower.merger

    @property
    def generation_config(self):
        return self._generation_config

    @property
    def dtype(self) -> torch.dtype:
        return self.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.get_input_embeddings().weight.device
