"""`load_pretrained_model`: load a LLaVA checkpoint (original or llava-hf layout) with its tokenizer,
image processor and pruning settings, returning `(tokenizer, model, image_processor, context_len)`.

Layouts:
- original (liuhaotian/llava-v1.5-*): config.json with `mm_*` fields (its model_type may say "llava",
  the same string as transformers' LlavaConfig, so the layout is told apart by the fields), weights
  `model.*`, `model.mm_projector.*`, `lm_head.*`, and the CLIP tower named by `mm_vision_tower`;
- llava-hf (LlavaForConditionalGeneration): nested text/vision configs, renamed on load.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
from llava.pruning.config import PruningConfig

from .checkpoint import checkpoint_tensors, strip_prefix
from .checkpoint_checks import CheckpointError, check_loading_info
from .device_checks import check_device, check_dtype
from .families import LoadOptions, family_of
from .multimodal import LlavaForPruning
from .multimodal_encoder.builder import build_vision_tower, resolve_pretrained_dir

logger = logging.getLogger(__name__)

VISION_ATTN_IMPLEMENTATIONS = ("sdpa", "eager")

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(torch_dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """None/'auto' -> float16 on CUDA (as LLaVA evaluates) and float32 elsewhere."""
    if isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if torch_dtype in (None, "auto"):
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    try:
        return _DTYPES[str(torch_dtype)]
    except KeyError:
        raise ValueError(f"unknown torch_dtype {torch_dtype!r}; use one of {sorted(_DTYPES)}") from None


def resolve_device(device: str | None) -> str:
    """'auto'/None -> 'cuda' when available, else 'cpu'; a named device must exist (DeviceError otherwise)."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device)
    return device


def read_config(model_path: str) -> dict:
    path = Path(model_path) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_path}: no config.json; is this a LLaVA checkpoint folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); restore this file from the original checkpoint") from None


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map: str | dict | None = "auto",
    device: str = "auto",
    use_flash_attn: bool = False,
    visual_token_num: int | None = None,
    pruning_method: str | None = None,
    pruning_args: dict | str | None = None,
    torch_dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    vision_tower_path: str | None = None,
    anyres_mode: str | None = None,
    pruning: PruningConfig | None = None,
    vision_attn_implementation: str = "sdpa",
    allow_missing_weights: bool = False,
    **kwargs,
):
    """Load a LLaVA checkpoint; returns `(tokenizer, model, image_processor, context_len)`.

    model_path: local folder or a model id in the local HF cache (never downloaded).
    model_base: base LLM for projector-only checkpoints (`mm_projector.bin` in model_path).
    visual_token_num: K kept visual tokens per image (None keeps all 576). pruning_method/pruning_args:
        a registered method ('fastervlm' unless given) and its options. anyres_mode: LLaVA-NeXT
        pruning mode, 'faithful' (default) or 'paper' (README, "LLaVA-NeXT"). These set the model's
        default PruningConfig (`model.pruning`); or pass that value as `pruning` (not both).
        Calls can pass their own (`generate(..., pruning=...)`).
    torch_dtype: 'float32' | 'float16' | 'bfloat16' | torch dtype | None (fp16 on CUDA, fp32 on CPU).
    attn_implementation: the LLM's attention ('sdpa' default, 'flash_attention_2' with use_flash_attn).
    vision_attn_implementation: the CLIP tower's attention, 'sdpa' (default) or 'eager' (bitwise equal
        to an eager CLIPVisionModel's features, for reproducing eager-tower results exactly).
    vision_tower_path: overrides `mm_vision_tower` (e.g. a local CLIP folder for offline use).
    allow_missing_weights: load even when the checkpoint lacks weights the model needs (or holds
        ones it does not), leaving those randomly initialised, with a warning; otherwise CheckpointError.
    """
    from llava.mm_utils import load_image_processor
    from llava.model.tokenizer import load_tokenizer

    if vision_attn_implementation not in VISION_ATTN_IMPLEMENTATIONS:
        raise ValueError(f"vision_attn_implementation must be one of {VISION_ATTN_IMPLEMENTATIONS}, "
                         f"not {vision_attn_implementation!r}")
    if pruning is not None and any(v is not None for v in (visual_token_num, pruning_method, pruning_args, anyres_mode)):
        raise ValueError("pass either pruning=PruningConfig(...) or visual_token_num/pruning_method/"
                         "pruning_args/anyres_mode, not both")
    if load_8bit or load_4bit:
        raise NotImplementedError("8/4-bit loading is not supported; use torch_dtype='float16' or 'bfloat16'")
    if model_name and "lora" in model_name.lower() and model_base:
        raise NotImplementedError("LoRA checkpoints must be merged first (peft's merge_and_unload), then loaded")
    device = resolve_device(device)
    dtype = resolve_dtype(torch_dtype, device)
    check_dtype(device, dtype)
    if attn_implementation is None:
        attn_implementation = "flash_attention_2" if use_flash_attn else "sdpa"
    if device_map is None or device_map == "auto" and not device.startswith("cuda"):
        device_map = {"": device}
    load_kwargs = dict(dtype=dtype, device_map=device_map, attn_implementation=attn_implementation, **kwargs)

    model_path = resolve_pretrained_dir(model_path)
    raw = read_config(model_path)
    options = LoadOptions(
        dtype=dtype, llm_kwargs=load_kwargs, vision_tower_path=vision_tower_path,
        vision_attn_implementation=vision_attn_implementation,
        model_base=None if model_base is None else resolve_pretrained_dir(model_base),
        allow_missing_weights=allow_missing_weights,
    )
    model = family_of(raw, model_path).load(model_path, raw, options)

    # As LLaVA: a projector-only (stage-1) folder has no tokenizer; the base LLM's folder has.
    tokenizer = load_tokenizer(options.model_base or model_path)
    _add_image_tokens(model, tokenizer)

    if model.get_vision_tower() is None:
        tower_name = vision_tower_path or model.config.mm_vision_tower
        if not tower_name:
            raise ValueError(f"{model_path}: config has no mm_vision_tower; pass vision_tower_path")
        tower = build_vision_tower(
            tower_name,
            model.config.mm_vision_select_layer,
            model.config.mm_vision_select_feature,
            base_dir=model_path,
            allow_missing_weights=allow_missing_weights,
            dtype=dtype,
            attn_implementation=vision_attn_implementation,
        )
        model.attach_vision_tower(tower)
        image_processor = tower.image_processor
        if getattr(model.config, "unfreeze_mm_vision_tower", False):
            # LLaVA-1.6 fine-tuned the tower: its weights in the checkpoint replace the CLIP ones.
            _overlay_tower_weights(model, model_path, allow_missing_weights)
    else:
        # a family that loaded its own processor (OneVision: llava.vision_compat) keeps it
        image_processor = model.get_vision_tower().image_processor or \
            load_image_processor(vision_tower_path or model_path)
        model.get_vision_tower().image_processor = image_processor
        # A tower stored in the checkpoint was built from its config; choose its attention here.
        model.get_vision_tower().vision_tower.set_attn_implementation(vision_attn_implementation)
    model.get_vision_tower().to(dtype=dtype)

    if pruning is not None:
        model.pruning = pruning
    else:  # unset fields keep the model's value (the default, or a legacy config.json's)
        keep_k = visual_token_num is None and not model.pruning.per_image
        model.set_pruning(model.pruning.visual_token_num if keep_k else visual_token_num,
                          pruning_method, pruning_args, anyres_mode)
    _load_text_tower_if_needed(model, model_path, vision_tower_path, allow_missing_weights)
    model.eval()
    context_len = getattr(model.config, "max_sequence_length", None) or 2048
    return tokenizer, model, image_processor, context_len


def _load_text_tower_if_needed(model: LlavaForPruning, model_path: str, vision_tower_path: str | None,
                               allow_missing_weights: bool) -> None:
    """Load CLIP's text tower, from the vision tower's full CLIP folder, only when the method reads the question."""
    from llava.pruning import get_method
    from llava.pruning.base import SIGNAL_TEXT_RELEVANCE

    from .multimodal_encoder.clip_text import load_clip_text_tower

    method = get_method(model.pruning.method)
    if SIGNAL_TEXT_RELEVANCE not in method.needs:
        return
    name = vision_tower_path or getattr(model.config, "mm_vision_tower", None)
    if not name:
        raise ValueError(f"pruning method {method.name!r} needs CLIP's text tower, but {model_path} names no "
                         "vision tower folder (mm_vision_tower); pass vision_tower_path / --vision-tower")
    folder = resolve_pretrained_dir(name, base_dir=model_path)
    model.text_tower = load_clip_text_tower(folder, device=model.get_vision_tower().device,
                                            allow_missing_weights=allow_missing_weights)


def _add_image_tokens(model: LlavaForPruning, tokenizer) -> None:
    """Checkpoints trained with <im_patch>/<im_start>/<im_end> need those tokens in the tokenizer."""
    new = []
    if getattr(model.config, "mm_use_im_patch_token", False):
        new.append(DEFAULT_IMAGE_PATCH_TOKEN)
    if getattr(model.config, "mm_use_im_start_end", False):
        new += [DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
        model.resize_token_embeddings(len(tokenizer))


TOWER_PREFIX = "model.vision_tower.vision_tower."


def _overlay_tower_weights(model: LlavaForPruning, model_path: str, allow_missing_weights: bool = False) -> None:
    """Load `model.vision_tower.vision_tower.[vision_model.]*` tensors of the checkpoint into the tower.

    A checkpoint that says it tuned its tower (`unfreeze_mm_vision_tower`) but holds none of its
    tensors would silently run with the untuned CLIP weights: an error unless allowed.
    """
    found = strip_prefix(checkpoint_tensors(model_path, TOWER_PREFIX), TOWER_PREFIX)
    if not found:
        message = (f"{model_path}: config.json says the vision tower was fine-tuned (unfreeze_mm_vision_tower) but "
                   f"the checkpoint holds no {TOWER_PREFIX}* tensors; restore the complete checkpoint, or pass "
                   f"allow_missing_weights=True (--allow-missing-weights) to use the CLIP tower's own weights")
        if not allow_missing_weights:
            raise CheckpointError(message)
        logger.warning(message)
        return
    tower = model.get_vision_tower().vision_tower
    state = {k[len("vision_model."):] if k.startswith("vision_model.") else k: v for k, v in found.items()}
    missing, unexpected = tower.load_state_dict(state, strict=False)
    info = {"missing_keys": [TOWER_PREFIX + k for k in missing], "unexpected_keys": [TOWER_PREFIX + k for k in unexpected]}
    check_loading_info(model_path, info, allow_missing_weights, what="the fine-tuned vision tower")
    logger.info("loaded %d vision-tower tensors from %s", len(state), model_path)
