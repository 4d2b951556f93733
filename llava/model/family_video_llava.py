"""The Video-LLaVA family: transformers' VideoLlavaForConditionalGeneration layout (LanguageBind/Video-LLaVA-7B-hf).

`python -m llava.model.family_video_llava --out DIR` writes the tiny checkpoint DIR/video-llava-tiny-hf
(random weights, 224 px, 14 px patches, 256 patches per frame, 8 frames, widths 64), saved with
transformers' own `save_pretrained`.

Each part loads itself: the LLM through `AutoModelForCausalLM.from_pretrained` (its
`language_model.*` / `model.language_model.*` tensors renamed by `key_mapping`), the projector
(`multi_modal_projector.linear_{1,2}`), and the image and video towers (two CLIP vision models of the
same shape, `image_tower.*` and `video_tower.*`) from the checkpoint's own tensors. Weights the
checkpoint lacks, or holds without a place for them, are one error. docs/VIDEO.md says how this
layout differs from the original Video-LLaVA.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .checkpoint import strip_prefix
from .families import LoadOptions, register_family
from .family_llava import HF_LLM_KEYS, _Fit, _install_mm_parts, _load_llm, hf_fields, hf_mm_tensors, llm_config
from .multimodal_encoder.registry import vision_adapter
from .video_llava import VideoLlavaForPruning

VIDEO_LLAVA_MM = re.compile(r"^(model\.)?(multi_modal_projector\.|image_tower\.|video_tower\.)")
VIDEO_DIR = "video-llava-tiny-hf"


def is_video_llava_config(raw: dict) -> bool:
    return raw.get("model_type") == "video_llava"


def num_frames_of(raw: dict) -> int:
    """Frames per video: video_seq_length / (patches per frame + its [CLS] row)."""
    vision = raw["vision_config"]
    per_frame = (vision.get("image_size", 224) // vision.get("patch_size", 14)) ** 2 + 1
    length = raw.get("video_seq_length", 2056)
    if length % per_frame:
        raise ValueError(f"video_seq_length={length} is not a whole number of frames of {per_frame} tokens")
    return length // per_frame


def _load_tower(adapter, fields: dict, select_feature: str, state: dict, prefix: str, fit: _Fit, opts: LoadOptions):
    tower = adapter.from_config(fields["vision_config"], fields["mm_vision_select_layer"], select_feature,
                                attn_implementation=opts.vision_attn_implementation)
    state = {k[len("vision_model."):] if k.startswith("vision_model.") else k: v for k, v in state.items()}
    missing, unexpected = tower.vision_tower.load_state_dict(state, strict=False)
    fit.add([k for k in missing if not k.endswith("position_ids")], unexpected, prefix=prefix)
    return tower.to(dtype=opts.dtype)


@register_family("video-llava-hf", detect=is_video_llava_config, tiny=lambda out: str(save_tiny_video_llava(out)),
                 same_tiny=False)
def load_video_llava(path: str, raw: dict, opts: LoadOptions) -> VideoLlavaForPruning:
    """transformers' VideoLlavaForConditionalGeneration layout: an image tower, a video tower, one projector."""
    from transformers import VideoLlavaImageProcessor

    if raw.get("vision_feature_select_strategy", "default") != "default":
        raise ValueError(f"{path}: vision_feature_select_strategy={raw['vision_feature_select_strategy']!r}; "
                         "Video-LLaVA checkpoints use 'default' (images without [CLS])")
    fields, llm_type = hf_fields({k: v for k, v in raw.items() if k != "image_grid_pinpoints"})
    fields["image_aspect_ratio"] = "pad"  # what Video-LLaVA was fine-tuned with (scripts/v1_5/finetune.sh)
    fit = _Fit()
    llm = _load_llm(path, llm_config(fields, llm_type), opts, VIDEO_LLAVA_MM, fit, key_mapping=HF_LLM_KEYS)
    model = VideoLlavaForPruning(llm.config, llm, num_frames=num_frames_of(raw))
    found, projector = hf_mm_tensors(path, "image_tower.", "video_tower.")
    _install_mm_parts(model, projector, None, fit)
    adapter = vision_adapter(fields["vision_config"].get("model_type", "clip_vision_model"))
    image_tower = _load_tower(adapter, fields, "patch", strip_prefix(found, "image_tower."), "image_tower.", fit, opts)
    video_tower = _load_tower(adapter, fields, "cls_patch", strip_prefix(found, "video_tower."), "video_tower.",
                              fit, opts)
    fit.check(path, opts, what="the Video-LLaVA model")
    model.attach_vision_tower(image_tower)
    model.attach_video_tower(video_tower)
    if (Path(path) / "preprocessor_config.json").is_file():
        model.video_processor = VideoLlavaImageProcessor.from_pretrained(path)
    return model


# ---- the tiny checkpoint -----------------------------------------------------------------------
TINY_VIDEO_VISION = dict(
    image_size=224, patch_size=14, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=4, projection_dim=64, hidden_act="quick_gelu",
)
TINY_VIDEO_TEXT = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
    max_position_embeddings=4096, rms_norm_eps=1e-5, initializer_range=0.2, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2, pad_token_id=0,
)
TINY_VIDEO_FRAMES = 8


def build_tiny_video_llava(vocab_size: int, seed: int = 8):
    """A random transformers VideoLlavaForConditionalGeneration with real geometry (224 px, 14 px patches,
    256 patches per frame, 8 frames) and small widths; the image token is `vocab_size`, the video token
    `vocab_size + 1`. Weights are float16-exact, so a half-precision load loses nothing."""
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

    text = LlamaConfig(vocab_size=vocab_size + 2, **TINY_VIDEO_TEXT)
    per_frame = (TINY_VIDEO_VISION["image_size"] // TINY_VIDEO_VISION["patch_size"]) ** 2
    config = VideoLlavaConfig(
        vision_config=CLIPVisionConfig(**TINY_VIDEO_VISION).to_dict(), text_config=text.to_dict(),
        image_token_index=vocab_size, video_token_index=vocab_size + 1, image_seq_length=per_frame,
        video_seq_length=TINY_VIDEO_FRAMES * (per_frame + 1), vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu", tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = VideoLlavaForConditionalGeneration(config)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed + 1)
        for name, param in model.named_parameters():
            if "multi_modal_projector" in name and name.endswith("weight"):  # LLaVA's init scale
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
            param.copy_(param.half().float())
    return model.eval()


def save_tiny_video_llava(out_dir, seed: int = 8) -> Path:
    """Write a tiny Video-LLaVA in the HF layout with transformers' own save_pretrained; returns its folder.

    The folder holds the weights, config.json, a sentencepiece tokenizer and the
    VideoLlavaImageProcessor's preprocessor_config.json.
    """
    from transformers import VideoLlavaImageProcessor

    from .tiny import mark_random_weights
    from .tokenizer import load_tokenizer, save_tiny_tokenizer

    folder = Path(out_dir).resolve() / VIDEO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    save_tiny_tokenizer(folder)
    model = build_tiny_video_llava(len(load_tokenizer(str(folder))), seed)
    model.save_pretrained(folder)
    VideoLlavaImageProcessor().save_pretrained(folder)
    return mark_random_weights(folder)


def main(argv: list[str] | None = None) -> None:
    """`python -m llava.model.family_video_llava --out DIR`: write DIR/video-llava-tiny-hf (no download)."""
    import argparse

    parser = argparse.ArgumentParser(description="Write the tiny Video-LLaVA checkpoint (transformers' "
                                     "VideoLlavaForConditionalGeneration layout, random weights, no download).")
    parser.add_argument("--out", default="playground/tiny", help="folder to create the checkpoint in")
    parser.add_argument("--seed", type=int, default=8, help="random seed of the weights")
    args = parser.parse_args(argv)
    print(f"tiny Video-LLaVA checkpoint: {save_tiny_video_llava(args.out, args.seed)}")


if __name__ == "__main__":
    main()
