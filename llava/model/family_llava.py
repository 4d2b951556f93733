"""The LLaVA family: LLaVA-1.5 and LLaVA-1.6 (NeXT) checkpoints in the original and llava-hf layouts.

Each part loads itself: the LLM through `AutoModelForCausalLM.from_pretrained` (its weights are
`model.*`/`lm_head.*` in the original layout, renamed by `key_mapping` in the HF one), and the
projector, NeXT's newline vector and a tower stored in the checkpoint from the checkpoint's own
tensors. Weights the checkpoint lacks, or holds without a place for them, are an error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

from llava import compat

from .checkpoint import checkpoint_tensors, strip_prefix
from .checkpoint_checks import CheckpointError, check_files, check_loading_info, load_with_info
from .families import LoadOptions, register_family
from .multimodal import LlavaForPruning
from .multimodal_encoder.registry import vision_adapter

# The LLM behind each original LLaVA architecture name.
LLM_TYPES = {"LlavaLlamaForCausalLM": "llama", "LlavaMistralForCausalLM": "mistral",
             "LlavaQwenForCausalLM": "qwen2"}
_NOT_CONFIG = ("model_type", "transformers_version", "_name_or_path")

# Checkpoint tensors that belong to the multimodal parts, not to the LLM.
ORIGINAL_MM = re.compile(r"^model\.(mm_projector\.|image_newline$|vision_tower\.)")
HF_MM = re.compile(r"^(model\.)?(multi_modal_projector\.|image_newline$|vision_tower\.)")
# llava-hf LLM keys (old `language_model.model.*` or new `model.language_model.*` style) -> transformers'.
HF_LLM_KEYS = {r"^model\.language_model\.": "model.", r"^language_model\.model\.": "model.",
               r"^language_model\.lm_head\.": "lm_head."}
_HF_PROJECTOR = {"linear_1.": "0.", "linear_2.": "2."}


def hf_mm_tensors(path: str, *parts: str) -> tuple[dict, dict]:
    """A llava-hf style checkpoint's multimodal tensors, old (`x.`) or new (`model.x.`) keys alike.

    parts: the top-level names to read besides the projector (e.g. "image_newline", "vision_tower.").
    Returns (every found tensor under its name without `model.`, the projector's in our nn.Sequential names).
    """
    names = ("multi_modal_projector.",) + parts
    found = checkpoint_tensors(path, tuple(p for name in names for p in ("model." + name, name)))
    found = {k[len("model."):] if k.startswith("model.") else k: v for k, v in found.items()}
    projector = {}
    for key, value in strip_prefix(found, "multi_modal_projector.").items():
        for hf, ours in _HF_PROJECTOR.items():
            if key.startswith(hf):
                projector[ours + key[len(hf):]] = value
    return found, projector
_PROJECTOR_ACTS = {"gelu": "mlp2x_gelu"}


def is_original_llava_config(raw: dict) -> bool:
    return "mm_vision_tower" in raw or "mm_hidden_size" in raw or any(a in LLM_TYPES for a in raw.get("architectures") or [])


def is_hf_llava_config(raw: dict) -> bool:
    """llava-hf's LlavaForConditionalGeneration / LlavaNextForConditionalGeneration config."""
    # (Video-LLaVA and OneVision configs hold text/vision configs too: their own families)
    return raw.get("model_type", "llava") in ("llava", "llava_next") and "text_config" in raw \
        and "vision_config" in raw and "mm_vision_tower" not in raw


def llm_config(fields: dict, llm_type: str) -> PretrainedConfig:
    """The LLM's own config class, carrying the multimodal fields as extra attributes."""
    return AutoConfig.for_model(llm_type, **{k: v for k, v in fields.items() if k not in _NOT_CONFIG})


def llm_type_of(raw: dict) -> str:
    for arch in raw.get("architectures") or []:
        if arch in LLM_TYPES:
            return LLM_TYPES[arch]
    return "llama"  # LLaVA-1.5/1.6 configs that name no architecture are LLaMA/Vicuna


def hf_fields(raw: dict) -> tuple[dict, str]:
    """The flat original-style fields of a llava-hf config.json, and its LLM's model_type."""
    text, vision = dict(raw["text_config"]), dict(raw["vision_config"])
    layer = raw.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"vision_feature_layer={layer!r}: only a single feature layer is supported")
    act = raw.get("projector_hidden_act", "gelu")
    if act not in _PROJECTOR_ACTS:
        raise ValueError(f"projector_hidden_act={act!r} is not supported (expected one of {sorted(_PROJECTOR_ACTS)})")
    llm_type = text.pop("model_type", "llama")
    for key in ("architectures", "transformers_version", "_name_or_path"):
        text.pop(key, None)
    vision.pop("transformers_version", None)
    anyres = "image_grid_pinpoints" in raw
    fields = dict(
        text,
        mm_vision_tower=vision.get("_name_or_path") or None,
        mm_hidden_size=vision["hidden_size"],
        mm_vision_select_layer=layer,
        mm_vision_select_feature="patch" if raw.get("vision_feature_select_strategy", "default") == "default"
        else "cls_patch",
        mm_projector_type=_PROJECTOR_ACTS[act],
        image_aspect_ratio="anyres" if anyres else "pad",
        # llava-hf lists pinpoints as (height, width); ours are (width, height) like the original code.
        image_grid_pinpoints=[[w, h] for h, w in raw["image_grid_pinpoints"]] if anyres else None,
        mm_patch_merge_type="spatial_unpad" if anyres else "flat",
        vision_config=vision,
        tie_word_embeddings=raw.get("tie_word_embeddings", text.get("tie_word_embeddings", False)),
        architectures=["LlavaLlamaForCausalLM"],
    )
    return fields, llm_type


class _Fit:
    """Weights a load could not place, over every part, under the checkpoint's names; checked once."""

    def __init__(self) -> None:
        self.missing: list[str] = []
        self.unexpected: list[str] = []

    def add(self, missing, unexpected=(), prefix: str = "") -> None:
        self.missing += [prefix + k for k in missing]
        self.unexpected += [prefix + k for k in unexpected]

    def check(self, folder: str, opts: LoadOptions, what: str = "the LLaVA model") -> None:
        check_loading_info(folder, {"missing_keys": self.missing, "unexpected_keys": self.unexpected},
                           opts.allow_missing_weights, what=what)


def _load_llm(path: str, config: PretrainedConfig, opts: LoadOptions, mm_keys: re.Pattern, fit: _Fit, **extra):
    """The LLM's weights; the checkpoint's multimodal tensors (`mm_keys`) are left to their parts."""
    with compat.own_load_report():  # its report would list the multimodal tensors as unexpected
        llm, info = load_with_info(AutoModelForCausalLM, path, config=config, **opts.llm_kwargs, **extra)
    fit.add(info.get("missing_keys", ()), [k for k in info.get("unexpected_keys", ()) if not mm_keys.search(k)])
    return llm


def _install_mm_parts(model: LlavaForPruning, projector: dict, newline: torch.Tensor | None, fit: _Fit) -> None:
    """Load the projector and NeXT's newline; what they lack goes into `fit` under original names."""
    if model.mm_projector is not None:
        missing, unexpected = model.mm_projector.load_state_dict(projector, strict=False)
        fit.add(missing, unexpected, prefix="model.mm_projector.")
        model.mm_projector.to(device=model.device, dtype=model.dtype)
    if model.image_newline is not None:
        if newline is None:
            fit.add(["model.image_newline"])
        else:
            model.image_newline.data = newline.to(device=model.device, dtype=model.dtype)


def _tiny_original(out_dir) -> str:
    from .tiny import save_tiny_checkpoint

    return str(save_tiny_checkpoint(out_dir))


def _tiny_hf(out_dir) -> str:
    from .tiny import HF_DIR, save_tiny_checkpoint

    save_tiny_checkpoint(out_dir, hf_layout=True)
    return str(Path(out_dir) / HF_DIR)


@register_family("llava", detect=is_original_llava_config, tiny=_tiny_original)
def load_original(path: str, raw: dict, opts: LoadOptions) -> LlavaForPruning:
    """LLaVA-1.5/1.6 in the original layout (liuhaotian/llava-v1.5-*): LLM weights plus model.mm_projector.*."""
    config = llm_config(raw, llm_type_of(raw))
    fit = _Fit()
    if opts.model_base is not None:  # LLaVA's pretrain stage: the base LLM + mm_projector.bin in `path`
        check_files(path)
        file, projector = _projector_file(path)
        llm = _load_llm(opts.model_base, config, opts, ORIGINAL_MM, fit)
        fit.check(opts.model_base, opts, what="the LLM of the LLaVA model (--model-base)")
        model = LlavaForPruning(llm.config, llm)
        own = _Fit()
        _install_mm_parts(model, projector, None, own)
        own.missing = [k[len("model."):] for k in own.missing]  # the projector file's own names
        own.unexpected = [k[len("model."):] for k in own.unexpected]
        own.check(file, opts, what="the projector")
        return model
    llm = _load_llm(path, config, opts, ORIGINAL_MM, fit)
    model = LlavaForPruning(llm.config, llm)
    found = checkpoint_tensors(path, ("model.mm_projector.", "model.image_newline"))
    _install_mm_parts(model, strip_prefix(found, "model.mm_projector."), found.get("model.image_newline"), fit)
    fit.check(path, opts)
    return model


@register_family("llava-hf", detect=is_hf_llava_config, tiny=_tiny_hf)
def load_hf(path: str, raw: dict, opts: LoadOptions) -> LlavaForPruning:
    """llava-hf's LlavaForConditionalGeneration / LlavaNextForConditionalGeneration layout."""
    fields, llm_type = hf_fields(raw)
    fit = _Fit()
    llm = _load_llm(path, llm_config(fields, llm_type), opts, HF_MM, fit, key_mapping=HF_LLM_KEYS)
    model = LlavaForPruning(llm.config, llm)
    found, projector = hf_mm_tensors(path, "image_newline", "vision_tower.")
    _install_mm_parts(model, projector, found.get("image_newline"), fit)
    adapter = vision_adapter(fields["vision_config"].get("model_type", "clip_vision_model"))
    tower = adapter.from_config(fields["vision_config"], model.config.mm_vision_select_layer,
                                model.config.mm_vision_select_feature,
                                attn_implementation=opts.vision_attn_implementation)
    tower_state = {k[len("vision_model."):] if k.startswith("vision_model.") else k: v
                   for k, v in strip_prefix(found, "vision_tower.").items()}
    missing, unexpected = tower.vision_tower.load_state_dict(tower_state, strict=False)
    fit.add(missing, unexpected, prefix="model.vision_tower.vision_tower.")
    fit.check(path, opts)
    model.attach_vision_tower(tower)
    return model


def _projector_file(path: str) -> tuple[str, dict]:
    """The projector-only file of a stage-1 folder and its tensors, keyed like the projector's own state."""
    candidates = [os.path.join(path, n) for n in ("mm_projector.safetensors", "mm_projector.bin")]
    found = next((p for p in candidates if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(f"{path}: model_base was given but there is no mm_projector.bin/.safetensors")
    try:
        if found.endswith(".safetensors"):
            from safetensors.torch import load_file

            weights = load_file(found)
        else:
            weights = torch.load(found, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read the file is reported with its name
        first = str(err).splitlines()[0] if str(err) else ""
        raise CheckpointError(f"{found}: cannot read the projector weights ({type(err).__name__}: {first}); "
                              "re-download it") from None
    return found, {k.split("mm_projector.", 1)[1]: v for k, v in weights.items() if "mm_projector." in k}


# Settings that are run-time values, never part of a checkpoint's config.
_RUNTIME_FIELDS = ("visual_token_num", "pruning_method", "pruning_args", "anyres_mode", "vision_config")


def save_original(model: LlavaForPruning, folder, with_tower: bool = False) -> None:
    """Write `model` in the original LLaVA layout (what `load_original` and the original code read).

    The LLM saves itself with transformers' `save_pretrained` (config + `model.*`/`lm_head.*`); the
    multimodal tensors join its weight file under their original names (`model.mm_projector.*`,
    `model.image_newline`, and `model.vision_tower.vision_tower.*` with `with_tower`).
    """
    import json
    from pathlib import Path

    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    model.llm.save_pretrained(folder)
    weights_path = folder / "model.safetensors"
    weights = load_file(str(weights_path))
    extra = {k: v.contiguous() for k, v in model.original_state_dict(with_tower=with_tower).items()
             if ORIGINAL_MM.search(k) and not k.endswith("position_ids")}
    weights.update(extra)
    save_file(weights, str(weights_path), metadata={"format": "pt"})
    config_path = folder / "config.json"
    raw = json.loads(config_path.read_text())
    for key in _RUNTIME_FIELDS:
        raw.pop(key, None)
    llm_type = raw.get("model_type")
    raw["architectures"] = [next(a for a, t in LLM_TYPES.items() if t == llm_type)]
    raw["model_type"] = "llava"  # what the published checkpoints say
    config_path.write_text(json.dumps(raw, indent=2))
