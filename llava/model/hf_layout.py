"""Conversion between the HF `llava-hf` layout (LlavaForConditionalGeneration) and ours.

Loading uses regex key renames (transformers' `key_mapping`), so a llava-hf checkpoint goes
straight into `LlavaForPruning` without a second copy in memory. The reverse direction
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
    PretrainedConfig,
)

from .multimodal import LlavaForPruning

def hf_config_from_ours(config: PretrainedConfig, vision_config: CLIPVisionConfig, image_token_id: int):
    """A llava-hf (or llava-next-hf, for anyres) config with the same shapes.

    The text vocab grows to hold `image_token_id`.
    """
    text = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k in LlamaConfig().to_dict()})
    text.vocab_size = max(config.vocab_size, image_token_id + 1)
    text.architectures = ["LlamaForCausalLM"]  # the text model's own class, as llava-hf's configs name it
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


def to_hf_model(model: LlavaForPruning, image_token_id: int | None = None):
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
    ours = model.original_state_dict(with_tower=True)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in ours.items():
        if key.startswith("model.vision_tower.vision_tower."):
            renamed["model.vision_tower." + key[len("model.vision_tower.vision_tower.vision_model.") :]] = value
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


def publish_llava_hf_layout(folder) -> None:
    """Rewrite a saved llava-hf folder's weights to the published key layout (`vision_tower.vision_model.*`).

    transformers 5.x saves a LlavaForConditionalGeneration's tower keys without `vision_model.`, and
    loads either spelling; the published llava-hf checkpoints (and vLLM's loader) use the full one.
    """
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    for path in sorted(Path(folder).glob("model*.safetensors")):
        weights = load_file(path)
        renamed = {("vision_tower.vision_model." + k[len("vision_tower."):]
                    if k.startswith("vision_tower.") and not k.startswith("vision_tower.vision_model.") else k): v
                   for k, v in weights.items()}
        save_file(renamed, path, metadata={"format": "pt"})
