"""`load_pretrained_model`: load a LLaVA checkpoint (original or llava-hf layout) with its tokenizer,
image processor and pruning settings, returning `(tokenizer, model, image_processor, context_len)`.

Layouts:
- original (liuhaotian/llava-v1.5-*): config.json with `mm_*` fields (its model_type may say "llava",
  the same string as transformers' LlavaConfig, so the layout is told apart by the fields), weights
  `model.*`, `model.mm_projector.*`, `lm_head.*`, and the CLIP tower named by `mm_vision_tower`;
- llava-hf (LlavaForConditionalGeneration): nested text/vision configs, renamed on load;
- projector-only (LLaVA's pretrain stage): `mm_projector.bin` in model_path, the LLM from `model_base`.

Every layout is checked before and after loading (`checkpoint_checks`): a damaged JSON or safetensors
file is named, and weights the model needs but the checkpoint lacks (or the reverse) are an error
unless `allow_missing_weights=True`. The device and dtype are checked first (`device_checks`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN

from .checkpoint_checks import CheckpointError, check_files, check_loading_info, load_weights, weight_mismatch_message
from .device_checks import check_device, check_dtype
from .hf_layout import HF_TO_ORIGINAL_KEYS, config_from_hf, is_hf_llava_config
from .language_model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM
from .multimodal_encoder.builder import build_vision_tower, resolve_pretrained_dir

logger = logging.getLogger(__name__)

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


def original_config(raw: dict, **overrides) -> LlavaLlamaConfig:
    """Our config from an original-layout config.json (model_type 'llava' or 'llava_llama')."""
    fields = {k: v for k, v in raw.items() if k not in ("model_type", "transformers_version", "_name_or_path")}
    fields.update(overrides)
    return LlavaLlamaConfig(**fields)


def is_original_llava_config(raw: dict) -> bool:
    return "mm_vision_tower" in raw or "mm_hidden_size" in raw or "LlavaLlamaForCausalLM" in raw.get("architectures", [])


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
    pruning_method: str = "fastervlm",
    pruning_args: dict | str | None = None,
    torch_dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    vision_tower_path: str | None = None,
    anyres_mode: str = "faithful",
    allow_missing_weights: bool = False,
    **kwargs,
):
    """Load a LLaVA checkpoint; returns `(tokenizer, model, image_processor, context_len)`.

    model_path: local folder or a model id in the local HF cache (never downloaded).
    model_base: base LLM for projector-only checkpoints (`mm_projector.bin` in model_path).
    visual_token_num: K kept visual tokens per image (None keeps all 576); changeable later with
        `model.set_pruning(...)`. pruning_method/pruning_args: a registered method and its options.
    torch_dtype: 'float32' | 'float16' | 'bfloat16' | torch dtype | None (fp16 on CUDA, fp32 on CPU).
    attn_implementation: the LLM's attention ('sdpa' default, 'flash_attention_2' with use_flash_attn).
    vision_tower_path: overrides `mm_vision_tower` (e.g. a local CLIP folder for offline use).
    anyres_mode: LLaVA-NeXT pruning mode, 'faithful' or 'paper' (README, "LLaVA-NeXT").
    allow_missing_weights: load even when the checkpoint lacks weights the model needs (or holds
        ones it does not), leaving those randomly initialised, with a warning; otherwise CheckpointError.
    """
    from llava.mm_utils import load_image_processor
    from llava.model.tokenizer import load_tokenizer

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
    allow = allow_missing_weights
    tokenizer_dir = model_path
    if model_base is not None:
        tokenizer_dir = resolve_pretrained_dir(model_base)  # as LLaVA: the stage-1 folder has no tokenizer
        model = _load_projector_only(model_path, tokenizer_dir, raw, load_kwargs, allow)
    elif is_hf_llava_config(raw):
        config = config_from_hf(raw)
        model = load_weights(LlavaLlamaForCausalLM, model_path, allow, config=config,
                             key_mapping=HF_TO_ORIGINAL_KEYS, **load_kwargs)
    elif is_original_llava_config(raw):
        # The original layout keeps the CLIP tower in its own folder (mm_vision_tower); LLaVA-1.6's tuned
        # tower tensors in the checkpoint are read by _overlay_tower_weights below.
        model = load_weights(LlavaLlamaForCausalLM, model_path, allow, config=original_config(raw), **load_kwargs)
    else:
        raise ValueError(
            f"{model_path}: config.json is neither an original LLaVA config (mm_* fields) nor a llava-hf one "
            f"(text_config + vision_config); model_type={raw.get('model_type')!r}"
        )

    tokenizer = load_tokenizer(tokenizer_dir)
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
            allow_missing_weights=allow,
            dtype=dtype,
            attn_implementation="sdpa",
        )
        model.attach_vision_tower(tower)
        image_processor = tower.image_processor
        if getattr(model.config, "unfreeze_mm_vision_tower", False):
            # LLaVA-1.6 fine-tuned the tower: its weights in the checkpoint replace the CLIP ones.
            _overlay_tower_weights(model, model_path, allow)
    else:
        image_processor = load_image_processor(vision_tower_path or model_path)
        model.get_vision_tower().image_processor = image_processor
    model.get_vision_tower().to(dtype=dtype)

    model.set_pruning(visual_token_num, pruning_method, pruning_args, anyres_mode)
    model.eval()
    context_len = getattr(model.config, "max_sequence_length", None) or 2048
    return tokenizer, model, image_processor, context_len


def _load_projector_only(model_path: str, base_path: str, raw: dict, load_kwargs: dict,
                         allow_missing_weights: bool = False) -> LlavaLlamaForCausalLM:
    """LLaVA's pretrain stage output: the base LLM's weights plus `mm_projector.bin` from model_path.

    The base LLM legitimately lacks the projector, which comes from model_path. Anything else it lacks
    (such as LLaVA-1.6's image newline, which LLaVA's stage-1 file does not hold) is an error unless allowed.
    """
    candidates = [os.path.join(model_path, n) for n in ("mm_projector.safetensors", "mm_projector.bin")]
    found = next((p for p in candidates if os.path.isfile(p)), None)
    if found is None:
        raise FileNotFoundError(f"{model_path}: model_base was given but there is no mm_projector.bin/.safetensors")
    check_files(model_path)
    model = load_weights(LlavaLlamaForCausalLM, base_path, allow_missing_weights,
                         ignore=(r"^model\.mm_projector\.",),
                         what="the LLM of the LLaVA model (--model-base)", config=original_config(raw), **load_kwargs)
    try:
        if found.endswith(".safetensors"):
            from safetensors.torch import load_file

            weights = load_file(found)
        else:
            weights = torch.load(found, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure to read the file is reported with its name
        raise CheckpointError(f"{found}: cannot read the projector weights ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); re-download it") from None
    weights = {k.split("mm_projector.", 1)[1]: v for k, v in weights.items() if "mm_projector." in k}
    missing, unexpected = model.model.mm_projector.load_state_dict(weights, strict=False)
    message = weight_mismatch_message(found, [f"mm_projector.{k}" for k in missing],
                                      [f"mm_projector.{k}" for k in unexpected], what="the projector")
    if message and not allow_missing_weights:
        raise CheckpointError(message)
    if message:
        logger.warning("%s (continuing: allow_missing_weights)", message)
    model.model.mm_projector.to(device=model.model.embed_tokens.weight.device, dtype=model.dtype)
    return model


def _add_image_tokens(model: LlavaLlamaForCausalLM, tokenizer) -> None:
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


def checkpoint_tensors(model_path: str, prefix: str) -> dict[str, torch.Tensor]:
    """Tensors whose names start with `prefix` from a checkpoint's safetensors or .bin shards."""
    folder = Path(model_path)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    out: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as f:
                out.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)})
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
            out.update({k: v for k, v in state.items() if k.startswith(prefix)})
    return out


def _overlay_tower_weights(model: LlavaLlamaForCausalLM, model_path: str, allow_missing_weights: bool = False) -> None:
    """Load `model.vision_tower.vision_tower.[vision_model.]*` tensors of the checkpoint into the tower.

    A checkpoint that says it tuned its tower (`unfreeze_mm_vision_tower`) but holds none of its
    tensors would silently run with the untuned CLIP weights: an error unless allowed.
    """
    found = checkpoint_tensors(model_path, TOWER_PREFIX)
    if not found:
        message = (f"{model_path}: config.json says the vision tower was fine-tuned (unfreeze_mm_vision_tower) but "
                   f"the checkpoint holds no {TOWER_PREFIX}* tensors; restore the complete checkpoint, or pass "
                   f"allow_missing_weights=True (--allow-missing-weights) to use the CLIP tower's own weights")
        if not allow_missing_weights:
            raise CheckpointError(message)
        logger.warning(message)
        return
    tower = model.get_vision_tower().vision_tower
    state = {}
    for key, value in found.items():
        name = key[len(TOWER_PREFIX):]
        state[name[len("vision_model."):] if name.startswith("vision_model.") else name] = value
    missing, unexpected = tower.load_state_dict(state, strict=False)
    info = {"missing_keys": [TOWER_PREFIX + k for k in missing], "unexpected_keys": [TOWER_PREFIX + k for k in unexpected]}
    check_loading_info(model_path, info, allow_missing_weights, what="the fine-tuned vision tower")
    logger.info("loaded %d vision-tower tensors from %s", len(state), model_path)
