"""The platform's encode/select/project step around another library's vision tower and projector.

Both integrations that run inside another library's model class (transformers-native, vLLM) hand
their tower (as a vision adapter: `forward(images, needs) -> VisionSignals`, `num_patches`,
`select_feature`) and their projector to `PrunedEncoder`, which runs `LlavaMetaForCausalLM.encode_images`:
the same selection and the same projection of the kept tokens only as our own model.
"""

from __future__ import annotations

import torch

from llava.model.llava_arch import LlavaMetaForCausalLM
from llava.pruning import PruningConfig


class PrunedEncoder(LlavaMetaForCausalLM):
    """images [n, 3, S, S] -> n x [K_i, H] kept, projected tokens (`encode_images(images).features`)."""

    def __init__(self, tower, projector: torch.nn.Module, pruning: PruningConfig) -> None:
        self.tower, self.mm_projector, self.pruning = tower, projector, pruning

    def get_vision_tower(self):
        return self.tower
