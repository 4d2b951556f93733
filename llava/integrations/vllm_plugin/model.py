"""`FasterVLMLlavaForConditionalGeneration`: vLLM's LLaVA with FasterVLM's kept tokens per image.

The only module of the plugin that imports vLLM. Two pieces differ from vLLM's own LLaVA:
- the processing info counts K placeholders per image (min(K, N)), so the prompt, the KV cache and
  the positions are laid out for K tokens when the prompt is processed;
- the image step runs vLLM's CLIP (built only up to the selected layer), captures the q/k of the
  layers the method reads with the probe (the [CLS] row is computed from the last built layer's
  fused qkv output; vLLM's CLIP returns no attention weights), selects with the registered method
  and projects only the kept tokens.
The vision tower's heads must all live in one process: with tensor parallelism, run the encoder data
parallel (`--mm-encoder-tp-mode data`), otherwise the model refuses to start.
"""

from __future__ import annotations

import torch

from llava.torchvision_compat import prepare_torchvision

prepare_torchvision()  # before vLLM's LLaVA module imports transformers' torchvision image processors
from vllm.model_executor.models.llava import (  # noqa: E402
    LlavaDummyInputsBuilder,
    LlavaForConditionalGeneration,
    LlavaMultiModalProcessor,
    LlavaProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY  # noqa: E402

from llava.integrations.glue import PrunedEncoder
from llava.probe import HeadGeometry, QKProbe
from llava.pruning.base import VisionSignals
from llava.pruning.signals import compute_signals, tower_plan

from .settings import kept_tokens, pruning_settings


class FasterVLMProcessingInfo(LlavaProcessingInfo):
    """vLLM's LLaVA processing info, with K placeholders per image."""

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        full = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        return kept_tokens(pruning_settings(self.get_hf_config()), full)


class ServedCLIPTower:
    """A vision adapter over vLLM's CLIP vision transformer: features plus the signals a method names."""

    select_feature = "patch"

    def __init__(self, vision_model: torch.nn.Module) -> None:
        self.vision_model = vision_model
        config = vision_model.config
        self.num_patches_per_side = config.image_size // config.patch_size
        self.num_patches = self.num_patches_per_side ** 2
        self.layers = vision_model.encoder.layers  # built only up to the selected layer
        attn = self.layers[-1].self_attn
        if getattr(attn, "tp_size", 1) != 1:
            raise ValueError("FasterVLM's [CLS] attention needs every head of the vision tower in one process; "
                             "with tensor parallelism, start vLLM with --mm-encoder-tp-mode data")
        self.geometry = HeadGeometry(attn.num_heads_per_partition, attn.num_heads_per_partition,
                                     attn.head_dim, float(attn.scale))

    def __call__(self, images: torch.Tensor, needs: frozenset[str] = frozenset()) -> VisionSignals:
        """images [B, 3, S, S] -> VisionSignals(features [B, N, D], signals over the N patches)."""
        last = len(self.layers) - 1
        layers, q_rows, keep_q = tower_plan(needs, last, prefix=1) if needs else ([], None, False)
        probe = QKProbe({i: self.layers[i].self_attn for i in layers}, q_rows=q_rows, keep_q=keep_q)
        with probe.attached():
            hidden = self.vision_model(images, feature_select_strategy="full")  # [B, 1 + N, D], [CLS] first
        if not needs:
            return VisionSignals(hidden[:, 1:])
        signals = compute_signals(needs, probe.captured, self.geometry, last, prefix=1, hidden=hidden)
        return VisionSignals(hidden[:, 1:], **signals)


@MULTIMODAL_REGISTRY.register_processor(LlavaMultiModalProcessor, info=FasterVLMProcessingInfo,
                                        dummy_inputs=LlavaDummyInputsBuilder)
class FasterVLMLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """vLLM's LlavaForConditionalGeneration whose images enter the LLM as their K kept tokens."""

    def __init__(self, *, vllm_config, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        if self.config.vision_config.model_type != "clip_vision_model":
            raise ValueError(f"the FasterVLM vLLM plugin serves CLIP-tower LLaVA only, not a "
                             f"{self.config.vision_config.model_type} tower")
        if self.config.vision_feature_select_strategy != "default" or not isinstance(
                self.config.vision_feature_layer, int):
            raise ValueError("the FasterVLM vLLM plugin needs one vision_feature_layer and the 'default' "
                             "(patch-only) feature strategy, as LLaVA-1.5 uses")
        self.pruning = pruning_settings(self.config)
        self.served_tower = ServedCLIPTower(self.vision_tower.vision_model)

    def _process_image_input(self, image_input):
        if image_input["type"] != "pixel_values":  # precomputed embeddings pass through unchanged
            return super()._process_image_input(image_input)
        pixels = image_input["pixel_values"]
        pixels = torch.stack(list(pixels)) if isinstance(pixels, (list, tuple)) else pixels
        encoder = PrunedEncoder(self.served_tower, self.multi_modal_projector, self.pruning)
        return tuple(encoder.encode_images(pixels).features)  # n_img x [K, H]
