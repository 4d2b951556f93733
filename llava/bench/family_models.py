"""Random-weight checkpoints of the processor families at the released dimensions, for the timed bench.

`save_random_checkpoint("qwen2.5-vl-7b", folder, llm_layers=2)` writes an HF-layout folder that the
family loaders read like any other (`llava.model.builder.load_pretrained_model`):

1. the family's own tiny-checkpoint builder writes the processor, the small offline tokenizer with the
   family's special tokens and the chat template (`save_tiny_*`; its tiny weights are then removed);
2. the preset's config (`preset_config`: the released config.json's dimension fields in `RELEASED`,
   the LLM cut to `llm_layers` layers, the special-token ids of that tokenizer) is built with
   transformers' own config class, the model with transformers' own class on the meta device, filled
   once with uniform noise (`llava.bench.models._materialize`), and saved with `save_pretrained`.

Nothing here composes a model: loading goes through the family registry. The vocabulary keeps its
released size (the LM head runs on one row at prefill); the token ids of the image pads differ from the
released ones (they are the tiny tokenizer's), which changes no dimension.

`family_arch_from_config(name, raw, image_processor)` reads a family checkpoint's config.json (and its
processor's pixel limits) back into the `llava.bench.family_flops.FamilyArch` that its FLOPs use, so the
FLOPs of a timed run are those of the model that ran (real presets, tiny checkpoints or `--model-path`).

Sources of `RELEASED` (config.json of each model on the HF hub, read through public copies):
Qwen/Qwen2.5-VL-7B-Instruct (module shapes also printed in acproject/duorou docs/qwen2.5vl_graph.md),
Qwen/Qwen3-VL-8B-Instruct, llava-hf/llava-onevision-qwen2-7b-ov-hf (pinpoints 384 x {1..6}^2).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .family_flops import FAMILY_ARCHS, FamilyArch, TowerDims, _llm, get_family_arch

_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]

# The dimension fields of each released config.json (nested text_config / vision_config as transformers 5 writes them).
RELEASED: dict[str, dict] = {
    "qwen2.5-vl-7b": dict(
        model_type="qwen2_5_vl", tie_word_embeddings=False,
        text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064, rms_norm_eps=1e-6, max_position_embeddings=128000,
                         hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
    ),
    "qwen3-vl-8b": dict(
        model_type="qwen3_vl", tie_word_embeddings=False,
        text_config=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                         num_key_value_heads=8, head_dim=128, vocab_size=151936, rms_norm_eps=1e-6,
                         max_position_embeddings=262144, hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [24, 20, 20],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                           patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                           deepstack_visual_indexes=[8, 16, 24], hidden_act="gelu_pytorch_tanh"),
    ),
    "onevision-qwen2-7b": dict(
        model_type="llava_onevision", tie_word_embeddings=False, vision_feature_layer=-1,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", image_grid_pinpoints=_PINPOINTS,
        text_config=dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                         num_attention_heads=28, num_key_value_heads=4, vocab_size=152128, rms_norm_eps=1e-6,
                         max_position_embeddings=32768, hidden_act="silu",
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=1152, intermediate_size=4304,
                           num_hidden_layers=26, num_attention_heads=16, image_size=384, patch_size=14,
                           vision_use_head=False),
    ),
}
# The released preprocessors' pixel limits (Qwen: min_pixels / max_pixels of preprocessor_config.json).
RELEASED_PIXELS = {"qwen2.5-vl-7b": (3136, 12845056), "qwen3-vl-8b": (65536, 16777216)}
_TOKEN_FIELDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                 "image_token_index", "video_token_index")


def _tiny_builder(model_type: str):
    """The family's own tiny-checkpoint writer (processor, tokenizer, chat template) for `model_type`."""
    if model_type == "qwen2_5_vl":
        from llava.model.family_qwen2_5_vl import save_tiny_qwen2_5_vl

        return lambda folder, preset: save_tiny_qwen2_5_vl(folder)
    if model_type == "qwen3_vl":
        from llava.model.family_qwen3_vl import save_tiny_qwen3_vl

        def qwen3(folder, preset):
            if preset not in RELEASED_PIXELS:
                return save_tiny_qwen3_vl(folder)
            return save_tiny_qwen3_vl(folder, min_pixels=RELEASED_PIXELS[preset][0], max_pixels=RELEASED_PIXELS[preset][1])

        return qwen3
    if model_type == "llava_onevision":
        from llava.model.family_onevision import save_tiny_onevision

        return lambda folder, preset: save_tiny_onevision(
            folder, vision_aspect_ratio=RELEASED.get(preset, RELEASED["onevision-qwen2-7b"])["vision_aspect_ratio"])
    raise ValueError(f"no random-weight builder for model type {model_type!r}; presets: {', '.join(RELEASED)}")


def preset_config(name: str, llm_layers: int | None = None, token_ids: dict | None = None,
                  fields: dict | None = None) -> dict:
    """The released config.json fields of preset `name` (a plain dict), the LLM cut to `llm_layers` layers.

    fields: other dimension fields in `RELEASED`'s form instead of the preset's (the tests' small variants)."""
    if fields is None and name not in RELEASED:
        raise ValueError(f"unknown family --arch {name!r}; choose from {', '.join(RELEASED)}")
    raw = json.loads(json.dumps(RELEASED[name] if fields is None else fields))  # a deep copy
    if llm_layers is not None:
        top = raw["text_config"]["num_hidden_layers"]
        if not 1 <= llm_layers <= top:
            raise ValueError(f"--llm-layers must be in [1, {top}] for {name}, got {llm_layers}")
        raw["text_config"]["num_hidden_layers"] = llm_layers
    raw.update(token_ids or {})
    return raw


def save_random_checkpoint(name: str, folder, llm_layers: int | None = None, dtype: torch.dtype = torch.bfloat16,
                           seed: int = 0, fields: dict | None = None) -> Path:
    """Write preset `name` with random weights (and the family's processor/tokenizer) into `folder`.

    fields: dimension fields in `RELEASED`'s form instead of the preset's (same family, e.g. small widths)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig

    from .models import _materialize

    folder = Path(folder)
    model_type = (fields or RELEASED.get(name, {})).get("model_type")
    if model_type is None:
        raise ValueError(f"unknown family --arch {name!r}; choose from {', '.join(RELEASED)}")
    _tiny_builder(model_type)(folder, name)
    tiny = json.loads((folder / "config.json").read_text())
    token_ids = {k: tiny[k] for k in _TOKEN_FIELDS if k in tiny}
    generation = GenerationConfig.from_pretrained(folder)
    for path in list(folder.glob("*.safetensors")) + list(folder.glob("*.safetensors.index.json")) + [folder / "config.json"]:
        path.unlink()
    raw = preset_config(name, llm_layers, token_ids, fields)
    raw["text_config"].update({k: tiny["text_config"][k] for k in ("pad_token_id", "eos_token_id", "bos_token_id")
                               if k in tiny.get("text_config", {})})
    config = AutoConfig.for_model(**raw)
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers (rotary) real
        model = AutoModelForImageTextToText.from_config(config)
    _materialize(model, dtype, "cpu", 0.02, torch.Generator().manual_seed(seed))
    model.generation_config = generation
    model.save_pretrained(folder)
    return folder


# ---- config.json -> the FLOPs model ------------------------------------------------------------------
def _pixel_limits(image_processor) -> tuple[int, int]:
    size = getattr(image_processor, "size", None) or {}
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    return int(get("shortest_edge") or 0), int(get("longest_edge") or 0)


def family_arch_from_config(name: str, raw: dict, image_processor=None) -> FamilyArch:
    """The `FamilyArch` (FLOPs dimensions and token layout) of a family checkpoint's config.json `raw`.

    image_processor: the checkpoint's (Qwen: its min/max pixels set the resize; default the released ones).
    """
    text, vision = raw["text_config"], raw["vision_config"]
    heads = text["num_attention_heads"]
    llm = _llm(text["hidden_size"], text["intermediate_size"], text["num_hidden_layers"], heads,
               text.get("num_key_value_heads") or heads, text["vocab_size"], text.get("head_dim"))
    kind = raw["model_type"]
    if kind == "llava_onevision":
        v, out = vision["hidden_size"], text["hidden_size"]
        tower = TowerDims(v, vision["intermediate_size"], vision["num_hidden_layers"], vision["patch_size"],
                          heads=vision["num_attention_heads"])
        onevision = {"vision_config": {"image_size": vision["image_size"], "patch_size": vision["patch_size"]},
                     "vision_aspect_ratio": raw.get("vision_aspect_ratio", "anyres_max_9"),
                     "image_grid_pinpoints": raw["image_grid_pinpoints"],
                     "image_token_index": raw.get("image_token_index", 151646)}
        return FamilyArch(name, "llava-onevision", tower, ((v, out), (out, out)), llm, onevision=onevision)
    if kind not in ("qwen2_5_vl", "qwen3_vl"):
        raise ValueError(f"{name}: model type {kind!r} is not a processor family (llava_onevision, qwen2_5_vl, qwen3_vl)")
    merge, patch, v = vision["spatial_merge_size"], vision["patch_size"], vision["hidden_size"]
    grouped = v * merge * merge
    lo, hi = _pixel_limits(image_processor) if image_processor is not None else RELEASED_PIXELS.get(name, (0, 0))
    qwen25 = kind == "qwen2_5_vl"
    tower = TowerDims(v, vision["intermediate_size"], vision["depth"], patch, heads=vision["num_heads"],
                      gated_mlp=qwen25, temporal_patch=vision["temporal_patch_size"])
    projector = ((grouped, grouped), (grouped, vision["out_hidden_size"]))
    if qwen25:
        return FamilyArch(name, "qwen2.5-vl", tower, projector, llm,
                          full_attention_layers=tuple(vision["fullatt_block_indexes"]),
                          window=vision["window_size"] // patch // merge, merge=merge, min_pixels=lo, max_pixels=hi)
    return FamilyArch(name, "qwen3-vl", tower, projector, llm, mergers=1 + len(vision["deepstack_visual_indexes"]),
                      merge=merge, min_pixels=lo, max_pixels=hi)


def check_preset_matches_flops(name: str) -> None:
    """Raise if the released config of `name` disagrees with its FLOPs preset in `family_flops.FAMILY_ARCHS`."""
    derived = family_arch_from_config(name, preset_config(name))
    preset = get_family_arch(name)
    if derived != preset:
        raise AssertionError(f"{name}: the FLOPs preset {preset} differs from the released config's {derived}")


__all__ = ["RELEASED", "RELEASED_PIXELS", "FAMILY_ARCHS", "preset_config", "save_random_checkpoint",
           "family_arch_from_config", "check_preset_matches_flops"]
