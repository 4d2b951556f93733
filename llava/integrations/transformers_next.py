"""FasterVLM pruning inside transformers' own LLaVA-NeXT classes: a model/processor pair.

    model = FasterVLMLlavaNext.from_pretrained("llava-hf/llava-v1.6-vicuna-7b-hf", visual_token_num=58)
    processor = FasterVLMLlavaNextProcessor.from_pretrained("llava-hf/llava-v1.6-vicuna-7b-hf", visual_token_num=58)
    inputs = processor(images=image, text="USER: <image>\\nWhat is shown? ASSISTANT:", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=32)

The processor writes its placeholders before the model runs, so an image's token count must follow
from its size and the budget alone. Our two anyres modes (`PruningConfig.anyres_mode`):
- 'paper' (FasterVLM's LLaVA-NeXT setting, the default once a budget is set): a fixed 2x2 grid, K
  kept per view, no unpadding or newline tokens: 5 x K tokens per image, whatever its size;
- 'faithful' (the checkpoint's own grids, unpadding and newlines): allowed without a budget only,
  where it is the stock model (the count follows from the image size). With a budget it keeps a
  newline for every grid row that keeps a patch, so its count depends on what the method keeps:
  no processor can know it beforehand. Use `llava.model.builder.load_pretrained_model` for it.

The model subclasses `LlavaNextForConditionalGeneration`; only its image-feature step differs: the
views go through the platform's CLIP adapter and `encode_anyres_images` (the selection, layout and
projection of the kept tokens only that our own model uses), and the result enters the stock
forward as precomputed encoder outputs. Importing this module changes nothing in transformers.
"""

from __future__ import annotations

import torch
from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from llava.anyres import anyres_pinpoints, grid_shape, token_layout, views_per_image
from llava.compat import HF_ENCODER_OUTPUTS_KWARG, LLAVA_HF_KEY_MAPPING, check_encoder_outputs_kwarg
from llava.integrations.glue import PrunedEncoder, anyres_config
from llava.integrations.transformers_native import check_placeholders, clip_tower, pruning_from_kwargs
from llava.pruning import PruningConfig

PAPER_VIEWS = 5  # 'paper' mode: the base view and a fixed 2x2 grid of crops


def next_pruning(kwargs: dict) -> PruningConfig:
    """Pop FasterVLM's keyword arguments (with `anyres_mode`) out of `kwargs` into a PruningConfig.

    anyres_mode None means 'paper' with a budget and 'faithful' without one; 'faithful' with a
    budget is refused (its token count depends on the image's content, see the module docstring).
    """
    mode = kwargs.pop("anyres_mode", None)
    cfg = pruning_from_kwargs(kwargs)
    cfg = cfg.replace(anyres_mode=mode or ("paper" if cfg.prunes else "faithful"))
    check_countable(cfg)
    return cfg


def check_countable(cfg: PruningConfig) -> None:
    """Refuse settings whose token count per image does not follow from the image size and the budget."""
    if cfg.anyres_mode == "faithful" and cfg.prunes:
        raise ValueError("anyres_mode='faithful' with a budget keeps a newline token for each grid row that keeps "
                         "a patch, so an image's token count depends on its content and no processor can write "
                         "its placeholders; use anyres_mode='paper' (K per view, 5 x K tokens per image) or "
                         "llava.model.builder.load_pretrained_model")


def image_token_count(cfg: PruningConfig, image_size: tuple[int, int], grid_pinpoints_hw, crop_size: int,
                      patch_size: int) -> int:
    """Visual tokens an image of (width, height) gives the LLM under `cfg` (a `next_pruning` value).

    'paper': 5 x min(K, N) with N patches per view; 'faithful' (no budget): the base view, the
    unpadded grid and one newline per grid row, as LLaVA-NeXT lays them out.
    """
    side = crop_size // patch_size
    if cfg.anyres_mode == "paper":
        k = cfg.budget(side * side)
        return PAPER_VIEWS * (side * side if k is None else min(k, side * side))
    config = anyres_config(grid_pinpoints_hw)
    pinpoints = anyres_pinpoints(config, crop_size)
    crops = views_per_image(tuple(image_size), pinpoints, crop_size) - 1
    grid = grid_shape(tuple(image_size), pinpoints, crop_size) if crops else None
    return len(token_layout(crops, side, grid, tuple(image_size), unpad=True, newline=True))


class FasterVLMLlavaNext(LlavaNextForConditionalGeneration):
    """`LlavaNextForConditionalGeneration` whose images enter the LLM as FasterVLM's kept tokens.

    `pruning` (a PruningConfig, default: no pruning) is a plain attribute of the model object; set it
    with `from_pretrained(..., visual_token_num=K)` or `model.pruning = next_pruning({...})`.
    """

    pruning: PruningConfig = PruningConfig()

    def __init__(self, config) -> None:
        check_encoder_outputs_kwarg(LlavaNextForConditionalGeneration)
        super().__init__(config)

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "FasterVLMLlavaNext":
        """transformers' `from_pretrained`, plus visual_token_num / visual_token_ratio / pruning_method /
        pruning_args / anyres_mode."""
        pruning = next_pruning(kwargs)
        kwargs.setdefault("key_mapping", LLAVA_HF_KEY_MAPPING)
        model = super().from_pretrained(*args, **kwargs)
        model.pruning = pruning
        return model

    def token_count(self, image_size: tuple[int, int]) -> int:
        """Visual tokens an image of (width, height) gives the LLM under `self.pruning`."""
        vision = self.config.vision_config
        return image_token_count(self.pruning, image_size, self.config.image_grid_pinpoints, vision.image_size,
                                 vision.patch_size)

    def _encoder(self, layer, strategy) -> PrunedEncoder:
        strategy = self.config.vision_feature_select_strategy if strategy is None else strategy
        if strategy != "default":
            raise ValueError(f"FasterVLM's LLaVA-NeXT needs vision_feature_select_strategy='default', got {strategy!r}")
        check_countable(self.pruning)
        return PrunedEncoder(clip_tower(self, layer, strategy), self.model.multi_modal_projector, self.pruning,
                             anyres_config(self.config.image_grid_pinpoints, getattr(self.config, "_name_or_path", "")),
                             self.model.image_newline)

    @torch.no_grad()
    def get_image_features(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor, vision_feature_layer=None,
                           vision_feature_select_strategy=None, **kwargs) -> BaseModelOutputWithPooling:
        """pixel_values [n_img, P, 3, S, S] (padded views) or [sum V_i, 3, S, S], image_sizes [n_img, 2]
        as (height, width) -> pooler_output: n_img x [T_i, H], each image's kept tokens in LLM order."""
        encoder = self._encoder(vision_feature_layer, vision_feature_select_strategy)
        sizes = [(int(w), int(h)) for h, w in torch.as_tensor(image_sizes).tolist()]  # -> (width, height)
        crop = self.config.vision_config.image_size
        pinpoints = anyres_pinpoints(encoder.config, crop, self.pruning.anyres_mode)
        counts = [views_per_image(size, pinpoints, crop) for size in sizes]
        if pixel_values.dim() == 5:
            if pixel_values.shape[1] < max(counts):
                raise ValueError(f"pixel_values hold {pixel_values.shape[1]} views per image, but anyres_mode="
                                 f"{self.pruning.anyres_mode!r} needs {max(counts)} for image sizes {sizes}; "
                                 "preprocess with FasterVLMLlavaNextProcessor built with the model's settings")
            pixel_values = torch.cat([views[:n] for views, n in zip(pixel_values, counts)])  # -> [sum V_i, 3, S, S]
        encoded = encoder.encode_anyres_images(pixel_values, sizes)
        out = BaseModelOutputWithPooling(pooler_output=encoded.features)
        out.kept_indices = encoded.kept_indices
        return out

    def forward(self, input_ids=None, pixel_values=None, image_sizes=None, attention_mask=None, *args, **kwargs):
        """The stock forward, with the images replaced by their kept tokens (encoded here, once)."""
        if pixel_values is not None and kwargs.get(HF_ENCODER_OUTPUTS_KWARG) is None:
            image = self.get_image_features(pixel_values, image_sizes, kwargs.get("vision_feature_layer"),
                                            kwargs.get("vision_feature_select_strategy"))
            cfg = self.pruning
            check_placeholders(input_ids, self.config.image_token_id, image.pooler_output,
                               f"FasterVLMLlavaNextProcessor.from_pretrained(..., visual_token_num="
                               f"{cfg.visual_token_num}, anyres_mode={cfg.anyres_mode!r})")
            kwargs[HF_ENCODER_OUTPUTS_KWARG] = {"image": image}
            pixel_values = None
        return super().forward(input_ids, pixel_values, image_sizes, attention_mask, *args, **kwargs)


class FasterVLMLlavaNextProcessor(LlavaNextProcessor):
    """`LlavaNextProcessor` that writes one placeholder per token the model keeps (`image_token_count`),
    and in 'paper' mode preprocesses every image on the fixed 2x2 grid."""

    def __init__(self, image_processor=None, tokenizer=None, patch_size=None, vision_feature_select_strategy=None,
                 chat_template=None, image_token="<image>", num_additional_image_tokens=0,
                 visual_token_num: int | None = None, visual_token_ratio: float | None = None,
                 anyres_mode: str | None = None, **kwargs) -> None:
        # The parent's arguments are spelled out: transformers saves the ones named in this signature.
        self.visual_token_num, self.visual_token_ratio = visual_token_num, visual_token_ratio
        self.anyres_mode = anyres_mode
        self._pruning = next_pruning({"visual_token_num": visual_token_num, "visual_token_ratio": visual_token_ratio,
                                      "anyres_mode": anyres_mode})
        super().__init__(image_processor, tokenizer, patch_size=patch_size,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, num_additional_image_tokens=num_additional_image_tokens, **kwargs)

    def _crop_size(self) -> int:
        crop = self.image_processor.crop_size
        crop = crop if isinstance(crop, dict) else vars(crop)
        return int(crop["height"])

    def token_count(self, image_size: tuple[int, int]) -> int:
        """Placeholders for an image of (width, height)."""
        if self.patch_size is None:
            raise ValueError("FasterVLMLlavaNextProcessor needs patch_size (the vision tower's, e.g. 14)")
        return image_token_count(self._pruning, image_size, self.image_processor.image_grid_pinpoints,
                                 self._crop_size(), self.patch_size)

    def __call__(self, images=None, text=None, **kwargs):
        if self._pruning.anyres_mode == "paper" and images is not None:
            crop = self._crop_size()
            kwargs.setdefault("image_grid_pinpoints", [[2 * crop, 2 * crop]])
        return super().__call__(images=images, text=text, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        height, width = (int(v) for v in image_inputs["image_sizes"][image_idx])
        return self.image_token * self.token_count((width, height))

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs):
        data = super()._get_num_multimodal_tokens(image_sizes=image_sizes, **kwargs)
        if image_sizes is not None:  # (height, width) per image
            data.num_image_tokens = [self.token_count((int(w), int(h))) for h, w in image_sizes]
        return data
