"""The platform's encode/select/project step around another library's vision tower and projector.

Both integrations that run inside another library's model class (transformers-native, vLLM) hand
their tower (as a vision adapter: `forward(images, needs) -> VisionSignals`, `num_patches`,
`select_feature`) and their projector to `PrunedEncoder`, which runs `LlavaMetaForCausalLM.encode_images`
(LLaVA-1.5) or `encode_anyres_images` (LLaVA-NeXT, with `config` and `image_newline` given): the same
selection and the same projection of the kept tokens only as our own model.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from llava.model.llava_arch import LlavaMetaForCausalLM
from llava.pruning import PruningConfig


def anyres_config(grid_pinpoints_hw, name: str = "") -> SimpleNamespace:
    """The anyres fields `encode_anyres_images` reads, from a llava-hf NeXT config's (height, width) pinpoints.

    llava-hf's LLaVA-NeXT always merges 'spatial_unpad' (unpadding plus a newline token per grid row).
    """
    return SimpleNamespace(image_aspect_ratio="anyres", image_grid_pinpoints=[[w, h] for h, w in grid_pinpoints_hw],
                           mm_patch_merge_type="spatial_unpad", _name_or_path=name)


class PrunedEncoder(LlavaMetaForCausalLM):
    """images [n, 3, S, S] -> n x [K_i, H] kept, projected tokens (`encode_images(images).features`).

    With `config` (see `anyres_config`) and `image_newline` [H], anyres views -> per-image tokens
    (`encode_anyres_images(views, image_sizes).features`).
    """

    def __init__(self, tower, projector: torch.nn.Module, pruning: PruningConfig, config=None,
                 image_newline: torch.Tensor | None = None) -> None:
        self.tower, self.mm_projector, self.pruning = tower, projector, pruning
        self.config, self.image_newline = config, image_newline

    def get_vision_tower(self):
        return self.tower
