"""`FasterVLMLlavaForConditionalGeneration`: vLLM's LLaVA with FasterVLM's kept tokens per image.

The only module of the plugin that imports vLLM. Three pieces differ from vLLM's own LLaVA:
- the multimodal processor resolves each request's pruning (the server's settings, overridden by the
  request's `mm_processor_kwargs` `fastervlm_visual_token_num` / `fastervlm_pruning_method`) into two
  per-image tensors that travel with the pixels (`fastervlm_kept`: the tokens kept, min(K, N);
  `fastervlm_method`: the method's registry index); the prompt gets `fastervlm_kept` placeholders,
  so the prompt, the KV cache and the positions are laid out for the kept tokens when the prompt is
  processed, and vLLM's processor and encoder caches key each image by those kwargs too;
- the processing info reports the unpruned count as the most tokens an image can take, so the
  encoder cache holds any request's images;
- the image step runs vLLM's CLIP (built only up to the selected layer), captures the q/k of the
  layers the method reads with the probe (the [CLS] row is computed from the last built layer's
  fused qkv output; vLLM's CLIP returns no attention weights), selects with each image's method and
  budget, and projects only the kept tokens: exactly `fastervlm_kept` tokens per image.
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
from vllm.multimodal.inputs import MultiModalFieldConfig  # noqa: E402
from vllm.multimodal.parse import ImageProcessorItems  # noqa: E402
from vllm.multimodal.processing import PromptReplacement  # noqa: E402

from llava.integrations.glue import PrunedEncoder
from llava.probe import HeadGeometry, QKProbe
from llava.pruning.base import VisionSignals
from llava.pruning.signals import compute_signals, tower_plan

from .settings import REQUEST_KEYS, kept_tokens, method_index, method_of, pruning_settings, request_pruning

KEPT_FIELD, METHOD_FIELD = "fastervlm_kept", "fastervlm_method"  # per-image tensors from processor to model


class FasterVLMProcessingInfo(LlavaProcessingInfo):
    """vLLM's LLaVA processing info, with the server's K placeholders per image by default."""

    def full_tokens(self) -> int:
        """Tokens per image without pruning (N)."""
        side = self.get_vision_encoder_info().get_image_size()  # LLaVA-1.5 resizes every image to side x side
        return super().get_num_image_tokens(image_width=side, image_height=side)

    def get_num_image_tokens(self, *, image_width: int, image_height: int) -> int:
        full = super().get_num_image_tokens(image_width=image_width, image_height=image_height)
        return kept_tokens(pruning_settings(self.get_hf_config()), full)

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts):
        """A request may ask for more tokens than the server's K (up to N): size the encoder cache for N."""
        return {"image": self.full_tokens()}

    def get_hf_processor(self, **kwargs: object):
        return super().get_hf_processor(**{k: v for k, v in kwargs.items() if k not in REQUEST_KEYS})


class FasterVLMMultiModalProcessor(LlavaMultiModalProcessor):
    """vLLM's LLaVA processor, plus each image's kept count and method, resolved per request."""

    def _call_hf_processor(self, hf_data, hf_kwargs):
        request = self.info.ctx.get_merged_mm_kwargs(hf_kwargs)  # the server's mm_processor_kwargs, then the request's
        cfg = request_pruning(pruning_settings(self.info.get_hf_config()), request)
        out = super()._call_hf_processor(hf_data, {k: v for k, v in hf_kwargs.items() if k not in REQUEST_KEYS})
        if "pixel_values" in out:
            n = len(out["pixel_values"])
            out[KEPT_FIELD] = torch.full((n,), kept_tokens(cfg, self.info.full_tokens()), dtype=torch.long)
            out[METHOD_FIELD] = torch.full((n,), method_index(cfg.method), dtype=torch.long)
        return out

    def _get_mm_fields_config(self, hf_inputs, hf_processor_mm_kwargs):
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[KEPT_FIELD] = MultiModalFieldConfig.batched("image")
        fields[METHOD_FIELD] = MultiModalFieldConfig.batched("image")
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs):
        if not isinstance(mm_items.get("image"), ImageProcessorItems):  # no images, or precomputed embeddings
            return super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        image_token_id = self.info.get_hf_config().image_token_index

        def replacement(item_idx: int) -> list[int]:  # the count the model will return for this image
            return [image_token_id] * int(out_mm_kwargs["image"][item_idx][KEPT_FIELD].data)

        return [PromptReplacement(modality="image", target=[image_token_id], replacement=replacement)]


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


@MULTIMODAL_REGISTRY.register_processor(FasterVLMMultiModalProcessor, info=FasterVLMProcessingInfo,
                                        dummy_inputs=LlavaDummyInputsBuilder)
class FasterVLMLlavaForConditionalGeneration(LlavaForConditionalGeneration):
    """vLLM's LlavaForConditionalGeneration whose images enter the LLM as their kept tokens."""

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

    def embed_multimodal(self, **kwargs: object):
        """Each image's kept tokens, at the count and with the method its request resolved to."""
        kept, methods = kwargs.pop(KEPT_FIELD, None), kwargs.pop(METHOD_FIELD, None)
        image_input = self._parse_and_validate_image_input(**kwargs)
        if image_input is None:
            return []
        if image_input["type"] != "pixel_values":  # precomputed embeddings pass through unchanged
            return self._process_image_input(image_input)
        pixels = image_input["pixel_values"]
        pixels = torch.stack(list(pixels)) if isinstance(pixels, (list, tuple)) else pixels  # [n, 3, S, S]
        n = pixels.shape[0]
        kept = _flat(kept) if kept is not None else [kept_tokens(self.pruning, self.served_tower.num_patches)] * n
        methods = _flat(methods) if methods is not None else [method_index(self.pruning.method)] * n
        features: list[torch.Tensor | None] = [None] * n
        for index in sorted(set(methods)):  # one encoder pass per method in the batch (requests may differ)
            rows = [i for i, m in enumerate(methods) if m == index]
            name = method_of(index)
            cfg = self.pruning if name == self.pruning.method else self.pruning.replace(method=name, method_args=())
            encoded = PrunedEncoder(self.served_tower, self.multi_modal_projector, cfg).encode_images(
                pixels[rows], visual_token_num=[kept[i] for i in rows])
            for i, feature in zip(rows, encoded.features):
                features[i] = feature  # [kept_i, H]
        return tuple(features)


def _flat(values) -> list[int]:
    """A batched per-image field (a tensor [n], or a list of 0-d / [1] tensors) as a list of ints."""
    if torch.is_tensor(values):
        return [int(v) for v in values.flatten().tolist()]
    return [int(torch.as_tensor(v).flatten()[0]) for v in values]
