"""The one module that knows transformers' internal names.

transformers moves keyword names and helpers between minor releases (5.24 renamed the keyword
under which a decoder layer receives its KV cache from `past_key_values` to `cache`). Everything
in this package that calls a decoder layer directly, makes a cache, reads a cache from a model
output or builds a layer-level attention mask goes through the functions here, and the tests
check each of them against every spelling that exists in the supported releases.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

import torch
from torch import nn

# Keyword spellings of the KV cache, newest first.
CACHE_KWARGS = ("cache", "past_key_values")

# Attention implementations whose layer-level mask is a [B, 1, Q, KV] tensor we can build.
MASKED_ATTENTION = ("sdpa", "eager")


@lru_cache(maxsize=None)
def _cache_kwarg_of(forward_fn) -> str:
    params = inspect.signature(inspect.unwrap(forward_fn)).parameters
    for name in CACHE_KWARGS:
        if name in params:
            return name
    raise TypeError(
        f"{getattr(forward_fn, '__qualname__', forward_fn)} takes none of {CACHE_KWARGS}; "
        "this transformers release is not supported (see constraints.txt for the tested one)"
    )


def cache_kwarg(module: nn.Module) -> str:
    """The keyword under which `module.forward` (a decoder layer or model) takes its KV cache."""
    return _cache_kwarg_of(type(module).forward)


def call_decoder_layer(
    layer: nn.Module,
    hidden: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None,
    position_ids: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor],
    cache: Any | None,
) -> torch.Tensor:
    """Run one decoder layer: hidden [B, T, H] -> [B, T, H], storing its keys/values in `cache`."""
    kwargs = {cache_kwarg(layer): cache}
    out = layer(
        hidden,
        attention_mask=attention_mask,
        position_ids=position_ids,
        position_embeddings=position_embeddings,
        use_cache=cache is not None,
        **kwargs,
    )
    return out[0] if isinstance(out, tuple) else out  # releases before 5.0 returned a tuple


def project_queries_keys(layer: nn.Module, hidden: torch.Tensor) -> None:
    """Run a decoder layer's input norm and its q/k projections on hidden [B, T, H], and nothing else.

    The outputs are for a `QKProbe` attached to `layer.self_attn` to capture: the q/k this layer
    would compute on these tokens, without running its attention (used to score tokens before a drop).
    """
    attn = layer.self_attn
    normed = layer.input_layernorm(hidden)
    if hasattr(attn, "q_proj"):
        attn.q_proj(normed)
        attn.k_proj(normed)
    else:
        attn.qkv(normed)


def new_cache(config) -> Any:
    """An empty dynamic KV cache for a model with this (text) config."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=config)
    except TypeError:  # releases whose DynamicCache takes no config
        return DynamicCache()


def output_cache(outputs) -> Any:
    """The KV cache a model returned (`cache` in new releases, `past_key_values` in older ones)."""
    for name in CACHE_KWARGS:
        value = getattr(outputs, name, None)
        if value is not None:
            return value
    return None


def cache_length(cache, layer_idx: int) -> int:
    """Tokens stored in `cache` for one layer (layers may hold different lengths after a drop)."""
    return int(cache.get_seq_length(layer_idx))


def cache_tensors(cache) -> list[torch.Tensor]:
    """Every key and value tensor a dynamic cache holds (per-layer `keys`/`values` in 5.x releases)."""
    out = []
    for layer in getattr(cache, "layers", None) or []:
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if torch.is_tensor(t):
                out.append(t)
    return out


def attention_implementation(config) -> str:
    """The attention implementation a model config runs with ('sdpa', 'eager', 'flash_attention_2', ...)."""
    return getattr(config, "_attn_implementation", None) or "eager"


def layer_attention_mask(allowed: torch.Tensor, implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """The mask a decoder layer expects, from allowed [B, 1, Q, KV] bool (True = may attend).

    SDPA takes the boolean mask as it is; eager attention adds a float mask (0 or the dtype's minimum).
    """
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )
    raise ValueError(
        f"the LLM runs with attn_implementation={implementation!r}; token dropping inside the LLM "
        f"supports {MASKED_ATTENTION} (load with attn_implementation='sdpa')"
    )


def decoder_parts(model: nn.Module) -> tuple[nn.Module, nn.ModuleList, nn.Module, nn.Module]:
    """(embed_tokens, layers, final norm, rotary embedding) of a decoder-only base model."""
    missing = [n for n in ("embed_tokens", "layers", "norm", "rotary_emb") if not hasattr(model, n)]
    if missing:
        raise TypeError(f"{type(model).__name__} lacks {missing}; it is not a decoder-only transformers model")
    return model.embed_tokens, model.layers, model.norm, model.rotary_emb


class _DropLoadReport:
    """A logging filter that drops transformers' per-load weight report."""

    def filter(self, record) -> bool:
        return "LOAD REPORT" not in str(record.getMessage())


@contextmanager
def own_load_report() -> Iterator[None]:
    """Silence transformers' weight report during a load whose missing/unexpected keys we check ourselves."""
    import logging

    logger = logging.getLogger("transformers.modeling_utils")
    flt = _DropLoadReport()
    logger.addFilter(flt)
    try:
        yield
    finally:
        logger.removeFilter(flt)


def batch_prefix_cache(config, caches: list, rows: list[int], length: int) -> Any:
    """A new dynamic cache whose row b is the first `length` tokens of `caches[rows[b]]` (each of batch 1).

    The prefix caches stay untouched, so one image's prefix serves every batch of its questions.
    Reads the per-layer `keys`/`values` of 5.x caches and writes through the public `update`.
    """
    out = new_cache(config)
    n_layers = len(caches[0].layers)
    for layer_idx in range(n_layers):
        keys = torch.cat([caches[i].layers[layer_idx].keys[:, :, :length] for i in rows])  # [B, h, P, d]
        values = torch.cat([caches[i].layers[layer_idx].values[:, :, :length] for i in rows])
        out.update(keys, values, layer_idx)
    return out


# The keyword under which transformers' multimodal `forward`s (LlavaModel and relatives, 5.20 on)
# take image features computed outside the model: {"image": BaseModelOutputWithPooling(pooler_output=
# n_img x [K_i, H])}. The transformers-native integration hands its kept tokens over through it.
HF_ENCODER_OUTPUTS_KWARG = "mm_encoder_outputs"


def check_encoder_outputs_kwarg(model_class: type) -> None:
    """Raise a clear error if `model_class.forward` does not take precomputed encoder outputs."""
    if HF_ENCODER_OUTPUTS_KWARG not in inspect.signature(inspect.unwrap(model_class.forward)).parameters:
        raise RuntimeError(f"{model_class.__name__}.forward takes no {HF_ENCODER_OUTPUTS_KWARG!r} in this "
                           "transformers release; install the version pinned in constraints.txt")


# transformers renames the published llava-hf keys (`language_model.model.*`, `language_model.lm_head`,
# top-level `vision_tower` / `multi_modal_projector`) for its own classes only, by class name or
# model_type, and skips classes defined outside transformers. A subclass loads them through this
# explicit `key_mapping` (a public `from_pretrained` argument); keys already in the new layout
# match none of the patterns.
LLAVA_HF_KEY_MAPPING = {
    r"^language_model\.lm_head": "lm_head",
    r"^language_model\.model": "model.language_model",
    r"^vision_tower": "model.vision_tower",
    r"^multi_modal_projector": "model.multi_modal_projector",
    r"^image_newline": "model.image_newline",
}


# ---- Qwen-VL internals ---------------------------------------------------------------------------
class _StockMethods:
    """A stand-in `self` for a stock model's methods that read only `self.config` and sibling methods.

    `Qwen2_5_VLModel.get_rope_index` (and its Qwen3-VL twin) reads `self.config` and calls
    `self.get_vision_position_ids`; binding the class's own functions to this host runs them unchanged
    without building (or holding) the multimodal model they belong to.
    """

    def __init__(self, model_cls: type, config) -> None:
        self.config = config
        self._model_cls = model_cls

    def __getattr__(self, name: str):
        import types

        attr = getattr(self.__dict__["_model_cls"], name)
        return types.MethodType(attr, self) if inspect.isfunction(attr) else attr


def stock_rope_index(model_cls: type, config, input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor,
                     image_grid_thw: torch.Tensor | None, attention_mask: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The stock multimodal model's own M-RoPE layout: (position_ids [3, B, L], rope_deltas [B, 1]).

    model_cls: the multimodal base model class (`Qwen2_5_VLModel`), config: its full config.
    mm_token_type_ids [B, L]: 0 text, 1 image. Padding (attention_mask == 0) gets position 0.
    """
    host = _StockMethods(model_cls, config)
    return model_cls.get_rope_index(host, input_ids, mm_token_type_ids=mm_token_type_ids,
                                    image_grid_thw=image_grid_thw, attention_mask=attention_mask)


@dataclass
class QwenVisionLayout:
    """How Qwen2.5-VL's ViT lays out the patches of a batch of images (all in *window order*).

    window_index [G]: merge group at each window-order slot (raster group ids, offset per image);
    rope: (cos, sin) [P, Dh] per patch in window order; cu_seqlens [n_img + 1] / cu_window_seqlens
    [n_win + 1]: patch offsets of the images (full-attention blocks) and of the windows (the others).
    """

    window_index: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor]
    cu_seqlens: torch.Tensor
    cu_window_seqlens: torch.Tensor


def qwen_vision_layout(visual: nn.Module, hidden: torch.Tensor, grid_thw: torch.Tensor) -> QwenVisionLayout:
    """The layout `Qwen2_5_VisionTransformerPretrainedModel.forward` builds, from transformers' own helpers.

    hidden: the patch embeddings [P, D] (for the rotary tables' device and dtype).
    """
    from transformers.vision_utils import (get_vision_attention_seqlens, get_vision_position_ids,
                                           get_vision_window_index)

    position_ids = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
    cu_seqlens, _ = get_vision_attention_seqlens(grid_thw, visual.config)
    window_index, cu_window_seqlens = get_vision_window_index(
        grid_thw, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
        patch_size=visual.patch_size)
    seq_len = hidden.shape[0]
    cos, sin = visual.rotary_pos_emb(hidden, position_ids)
    rope = tuple(visual.permute_input_for_window_attn(t, window_index, seq_len=seq_len) for t in (cos, sin))
    return QwenVisionLayout(window_index.to(hidden.device), rope, cu_seqlens.to(hidden.device),
                            cu_window_seqlens.to(hidden.device))


def call_qwen_vision_block(block: nn.Module, hidden: torch.Tensor, cu_seqlens: torch.Tensor,
                           rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Run one Qwen2.5-VL vision block on packed patches hidden [P, D] (attention within `cu_seqlens`)."""
    max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return block(hidden, cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, position_embeddings=rope)


# ---- Qwen3-VL -------------------------------------------------------------------------------------
# The keywords under which Qwen3-VL's text model takes the DeepStack features and where they go.
DEEPSTACK_KWARGS = ("visual_pos_masks", "deepstack_visual_embeds")


def check_deepstack_kwargs(text_model: nn.Module) -> None:
    """Raise a clear error if the text model's `forward` does not take DeepStack features (`DEEPSTACK_KWARGS`)."""
    params = inspect.signature(inspect.unwrap(type(text_model).forward)).parameters
    missing = [name for name in DEEPSTACK_KWARGS if name not in params]
    if missing:
        raise RuntimeError(f"{type(text_model).__name__}.forward takes no {missing} in this transformers release; "
                           "install the version pinned in constraints.txt")


def qwen3_vision_prelude(visual: nn.Module, pixel_values: torch.Tensor,
                         grid_thw: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """What Qwen3-VL's vision model computes before its first block, for running the blocks one by one.

    pixel_values [P, C*T*p*p] (the processor's flattened patches, merge-group order), grid_thw [n, 3]
    -> (hidden [P, D]: patch embeddings plus the learned positions resampled to each grid, the keywords
    every block takes: `cu_seqlens`, `max_seqlen` (attention within each image) and
    `position_embeddings` (the 2-D rotary tables (cos, sin), each [P, Dh])). Follows
    `Qwen3VLVisionModel.forward` with the `transformers.vision_utils` helpers it uses.
    """
    from transformers.vision_utils import (get_vision_attention_seqlens, get_vision_interpolation_indices_and_weights,
                                           get_vision_position_ids)

    config = visual.config
    index, weight = get_vision_interpolation_indices_and_weights(
        grid_thw, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
        align_corners=visual.interpolation_align_corners, spatial_merge_size=config.spatial_merge_size)
    position_ids = get_vision_position_ids(grid_thw, visual.spatial_merge_size)
    cu_seqlens, max_seqlen = get_vision_attention_seqlens(grid_thw, config)
    hidden = visual.patch_embed(pixel_values.to(visual.patch_embed.proj.weight.dtype))  # [P, D]
    hidden = hidden + (visual.pos_embed(index) * weight[:, :, None]).sum(1).to(hidden.dtype)
    rope = visual.rotary_pos_emb(hidden, position_ids)
    return hidden, {"cu_seqlens": cu_seqlens, "max_seqlen": max_seqlen, "position_embeddings": rope}
