"""Conversion between the HF `llava-hf` layout (LlavaForConditionalGeneration) and ours.

Loading uses regex key renames (transformers' `key_mapping`), so a llava-hf checkpoint goes
straight into `LlavaLlamaForCausalLM` without a second copy in memory. The reverse direction
(`to_hf_model`) is used to save HF-layout checkpoints and to build references in tests.
"""

from __future__ import annotations

import re

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
)

from .language_model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM

# llava-hf checkpoint key (old `language_model.model.*` or new `model.language_model.*` style) -> ours.
HF_TO_ORIGINAL_KEYS: dict[str, str] = {
    r"^language_model\.model\.": "model.",
    r"^model\.language_model\.": "model.",
    r"^language_model\.lm_head\.": "lm_head.",
    r"^(?:model\.)?vision_tower\.(?:vision_model\.)?": "model.vision_tower.vision_tower.",
    r"^(?:model\.)?multi_modal_projector\.linear_1\.": "model.mm_projector.0.",
    r"^(?:model\.)?multi_modal_projector\.linear_2\.": "model.mm_projector.2.",
    r"^(?:model\.)?image_newline$": "model.image_newline",
}

_PROJECTOR_ACTS = {"gelu": "mlp2x_gelu"}


def is_hf_llava_config(config: dict) -> bool:
    """True for a llava-hf config.json (nested text/vision configs), False for the original layout."""
    return "text_config" in config and "vision_config" in config and "mm_vision_tower" not in config


def config_from_hf(config: dict, **overrides) -> LlavaLlamaConfig:
    """Our config from a llava-hf config.json dict."""
    text = dict(config["text_config"])
    vision = dict(config["vision_config"])
    layer = config.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"vision_feature_layer={layer!r}: only a single feature layer is supported")
    strategy = config.get("vision_feature_select_strategy", "default")
    act = config.get("projector_hidden_act", "gelu")
    if act not in _PROJECTOR_ACTS:
        raise ValueError(f"projector_hidden_act={act!r} is not supported (expected one of {sorted(_PROJECTOR_ACTS)})")
    for key in ("model_type", "architectures", "transformers_version", "_name_or_path"):
        text.pop(key, None)
    vision.pop("transformers_version", None)
    anyres = "image_grid_pinpoints" in config
    fields = dict(
        text,
        mm_vision_tower=vision.get("_name_or_path") or None,
        mm_hidden_size=vision["hidden_size"],
        mm_vision_select_layer=layer,
        mm_vision_select_feature="patch" if strategy == "default" else "cls_patch",
        mm_projector_type=_PROJECTOR_ACTS[act],
        image_aspect_ratio="anyres" if anyres else "pad",
        # llava-hf lists pinpoints as (height, width); ours are (width, height) like the original code.
        image_grid_pinpoints=[[w, h] for h, w in config["image_grid_pinpoints"]] if anyres else None,
        mm_patch_merge_type="spatial_unpad" if anyres else "flat",
        vision_config=vision,
        tie_word_embeddings=config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)),
        architectures=["LlavaLlamaForCausalLM"],
    )
    fields.update(overrides)
    return LlavaLlamaConfig(**fields)


def hf_config_from_ours(config: LlavaLlamaConfig, vision_config: CLIPVisionConfig, image_token_id: int):
    """A llava-hf (or llava-next-hf, for anyres) config with the same shapes.

    The text vocab grows to hold `image_token_id`.
    """
    text = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k in LlamaConfig().to_dict()})
    text.vocab_size = max(config.vocab_size, image_token_id + 1)
    extra, config_class = {}, LlavaConfig
    if config.image_aspect_ratio == "anyres":
        if config.mm_patch_merge_type != "spatial_unpad":
            raise ValueError("the llava-next-hf layout holds the spatial_unpad merge only")
        config_class = LlavaNextConfig
        extra["image_grid_pinpoints"] = [[h, w] for w, h in config.image_grid_pinpoints]
    return config_class(
        **extra,
        vision_config=vision_config.to_dict(),
        text_config=text.to_dict(),
        image_token_id=image_token_id,
        vision_feature_layer=config.mm_vision_select_layer,
        vision_feature_select_strategy="default" if config.mm_vision_select_feature == "patch" else "full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )


def to_hf_model(model: LlavaLlamaForCausalLM, image_token_id: int | None = None):
    """An HF LlavaForConditionalGeneration (LlavaNext for anyres) with copies of `model`'s weights.

    The image token gets a fresh vocabulary row at `image_token_id` (default: our vocab size); its
    embedding is never used because image features overwrite those positions.
    """
    if model.config.mm_projector_type != "mlp2x_gelu":
        raise ValueError("the HF layout only holds the mlp2x_gelu projector")
    tower = model.get_vision_tower()
    image_token_id = model.config.vocab_size if image_token_id is None else image_token_id
    hf_config = hf_config_from_ours(model.config, tower.config, image_token_id)
    hf_class = LlavaNextForConditionalGeneration if isinstance(hf_config, LlavaNextConfig) else LlavaForConditionalGeneration
    hf = hf_class(hf_config)
    ours = model.state_dict()
    renamed: dict[str, torch.Tensor] = {}
    for key, value in ours.items():
        if key.startswith("model.vision_tower.vision_tower."):
            renamed["model.vision_tower." + key[len("model.vision_tower.vision_tower.") :]] = value
        elif key.startswith("model.mm_projector."):
            idx = key.split(".")[2]
            renamed[f"model.multi_modal_projector.linear_{1 if idx == '0' else 2}." + key.split(".", 3)[3]] = value
        elif key == "model.image_newline":
            renamed["model.image_newline"] = value
        elif key.startswith("model."):
            renamed["model.language_model." + key[len("model.") :]] = value
        else:
            renamed[key] = value
    target = hf.state_dict()
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        grown = target[key].clone()
        grown[: renamed[key].shape[0]] = renamed[key]
        renamed[key] = grown
    missing, unexpected = hf.load_state_dict(renamed, strict=False)
    missing = [k for k in missing if not re.search(r"position_ids$", k)]
    if missing or unexpected:
        raise RuntimeError(f"weight transfer to HF layout failed: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return hf.to(dtype=next(model.parameters()).dtype).eval()
