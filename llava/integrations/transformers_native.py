"""FasterVLM pruning inside transformers' own LLaVA classes: a model/processor pair.

    model = FasterVLMLlava.from_pretrained("llava-hf/llava-1.5-7b-hf", visual_token_num=58)
    processor = FasterVLMLlavaProcessor.from_pretrained("llava-hf/llava-1.5-7b-hf", visual_token_num=58)
    inputs = processor(images=image, text="USER: <image>\\nWhat is shown? ASSISTANT:", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=32)

The model subclasses `LlavaForConditionalGeneration`; only its image-feature step differs. It runs
the CLIP tower through the platform's vision adapter (up to the selected layer, with the signals the
method names, no attention maps), selects with the registered method, projects only the kept
tokens and hands them to the stock forward as precomputed encoder outputs. The processor
subclasses `LlavaProcessor` and writes one placeholder per kept token. Importing this module
changes nothing in transformers.
"""

from __future__ import annotations

import torch
from transformers import LlavaForConditionalGeneration, LlavaProcessor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llava.compat import HF_ENCODER_OUTPUTS_KWARG, LLAVA_HF_KEY_MAPPING, check_encoder_outputs_kwarg
from llava.integrations.glue import PrunedEncoder
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.pruning import PruningConfig, get_method

PRUNING_KWARGS = ("visual_token_num", "visual_token_ratio", "pruning_method", "pruning_args")


def pruning_from_kwargs(kwargs: dict) -> PruningConfig:
    """Pop FasterVLM's keyword arguments out of `kwargs` into a PruningConfig.

    visual_token_ratio here is the kept fraction (K = round(r x N)), like the drivers'
    `--visual-token-ratio`: PruningConfig's `keep_ratio`.
    """
    k = kwargs.pop("visual_token_num", None)
    kept_ratio = kwargs.pop("visual_token_ratio", None)
    method = kwargs.pop("pruning_method", "fastervlm")
    args = kwargs.pop("pruning_args", None)
    if k is not None and kept_ratio is not None:
        raise ValueError("give visual_token_num or visual_token_ratio, not both")
    if kept_ratio is not None and not 0 < float(kept_ratio) <= 1:
        raise ValueError(f"visual_token_ratio must be in (0, 1] (the kept fraction), got {kept_ratio!r}")
    cfg = PruningConfig(method=method, visual_token_num=k, keep_ratio=kept_ratio, method_args=args)
    method = get_method(cfg.method)
    if method.stage != "pre_llm" and cfg.prunes:
        raise ValueError(f"pruning_method {cfg.method!r} prunes inside the LLM, which transformers' LLaVA classes "
                         "cannot do; use llava.model.builder.load_pretrained_model for in-LLM methods")
    if method.question_dependent and cfg.prunes:
        raise ValueError(f"pruning_method {cfg.method!r} reads the question text, which transformers' image-feature "
                         "step never sees; use llava.model.builder.load_pretrained_model for it")
    return cfg


def clip_tower(model, layer: int | None, strategy: str | None) -> CLIPVisionTower:
    """The platform's CLIP adapter over a transformers LLaVA model's own tower (no copy of its weights)."""
    layer = model.config.vision_feature_layer if layer is None else layer
    strategy = model.config.vision_feature_select_strategy if strategy is None else strategy
    if not isinstance(layer, int):
        raise ValueError(f"FasterVLM needs one vision_feature_layer, got {layer!r}")
    feature = {"default": "patch", "full": "cls_patch"}[strategy]
    return CLIPVisionTower(model.model.vision_tower, layer, feature, freeze=False)


def check_placeholders(input_ids: torch.Tensor | None, image_token_id: int, features: list[torch.Tensor],
                       hint: str) -> None:
    """Raise a clear error when the prompts' image placeholders do not match the kept tokens."""
    if input_ids is None:
        return
    have = int((input_ids == image_token_id).sum())
    want = sum(f.shape[0] for f in features)
    if have != want:
        raise ValueError(f"the prompts hold {have} image placeholders but FasterVLM keeps {want} visual tokens "
                         f"for {len(features)} image(s); build the processor with the model's budget ({hint})")


class FasterVLMLlava(LlavaForConditionalGeneration):
    """`LlavaForConditionalGeneration` whose images enter the LLM as FasterVLM's K kept tokens.

    `pruning` (a PruningConfig, default: no pruning) is a plain attribute of the model object; set it
    with `from_pretrained(..., visual_token_num=K)` or `model.pruning = PruningConfig(...)`.
    """

    pruning: PruningConfig = PruningConfig()

    def __init__(self, config) -> None:
        check_encoder_outputs_kwarg(LlavaForConditionalGeneration)
        super().__init__(config)

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "FasterVLMLlava":
        """transformers' `from_pretrained`, plus visual_token_num / visual_token_ratio / pruning_method / pruning_args."""
        pruning = pruning_from_kwargs(kwargs)
        kwargs.setdefault("key_mapping", LLAVA_HF_KEY_MAPPING)
        model = super().from_pretrained(*args, **kwargs)
        model.pruning = pruning
        return model

    def _tower(self, layer: int | None, strategy: str | None) -> CLIPVisionTower:
        return clip_tower(self, layer, strategy)

    def kept_tokens(self, num_patches: int | None = None) -> int:
        """Visual tokens per image entering the LLM under `self.pruning`."""
        cfg = self.config.vision_config
        n = num_patches or (cfg.image_size // cfg.patch_size) ** 2
        k = self.pruning.budget(n) if get_method(self.pruning.method).stage == "pre_llm" else None
        return n if k is None else min(k, n)

    @torch.no_grad()
    def get_image_features(self, pixel_values: torch.Tensor, vision_feature_layer=None,
                           vision_feature_select_strategy=None, **kwargs) -> BaseModelOutputWithPooling:
        """pixel_values [n_img, 3, S, S] -> pooler_output: n_img x [K_i, H], the kept projected tokens."""
        glue = PrunedEncoder(self._tower(vision_feature_layer, vision_feature_select_strategy),
                             self.model.multi_modal_projector, self.pruning)
        encoded = glue.encode_images(pixel_values)
        out = BaseModelOutputWithPooling(pooler_output=encoded.features)
        out.kept_indices = encoded.kept_indices
        return out

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, *args, **kwargs):
        """The stock forward, with the images replaced by their kept tokens (encoded here, once)."""
        if pixel_values is not None and kwargs.get(HF_ENCODER_OUTPUTS_KWARG) is None:
            image = self.get_image_features(pixel_values, kwargs.get("vision_feature_layer"),
                                            kwargs.get("vision_feature_select_strategy"))
            self._check_placeholders(input_ids, image.pooler_output)
            kwargs[HF_ENCODER_OUTPUTS_KWARG] = {"image": image}
            pixel_values = None
        return super().forward(input_ids, pixel_values, attention_mask, *args, **kwargs)

    def _check_placeholders(self, input_ids: torch.Tensor | None, features: list[torch.Tensor]) -> None:
        check_placeholders(input_ids, self.config.image_token_id, features,
                           f"FasterVLMLlavaProcessor.from_pretrained(..., visual_token_num="
                           f"{self.pruning.visual_token_num})")


class FasterVLMLlavaProcessor(LlavaProcessor):
    """`LlavaProcessor` that writes one image placeholder per kept token (K instead of N)."""

    def __init__(self, image_processor=None, tokenizer=None, patch_size=None, vision_feature_select_strategy=None,
                 chat_template=None, image_token="<image>", num_additional_image_tokens=0,
                 visual_token_num: int | None = None, visual_token_ratio: float | None = None, **kwargs) -> None:
        # The parent's arguments are spelled out: transformers saves the ones named in this signature.
        self.visual_token_num = visual_token_num
        self.visual_token_ratio = visual_token_ratio
        self._pruning = pruning_from_kwargs({"visual_token_num": visual_token_num,
                                             "visual_token_ratio": visual_token_ratio})
        super().__init__(image_processor, tokenizer, patch_size=patch_size,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, num_additional_image_tokens=num_additional_image_tokens, **kwargs)

    def kept(self, num_tokens: int) -> int:
        k = self._pruning.budget(num_tokens)
        return num_tokens if k is None else min(k, num_tokens)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        full = super().replace_image_token(image_inputs, image_idx, **kwargs)
        return self.image_token * self.kept(len(full) // len(self.image_token))

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        data = super()._get_num_multimodal_tokens(image_sizes=image_sizes, **kwargs)
        if image_sizes is not None:
            data.num_image_tokens = [self.kept(n) for n in data.num_image_tokens]
        return data
