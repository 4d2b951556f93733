"""Checks of what a caller hands `generate` / `forward` of the processor families (OneVision, Qwen-VL).

Each check raises a one-line ValueError naming the argument and what to pass instead, before any
tensor reaches a library module (whose own errors would be an IndexError or a reshape message).
"""

from __future__ import annotations

import torch


def check_prompts(input_ids, attention_mask, family: str) -> None:
    """input_ids: an integer tensor [B, T]; attention_mask (optional): the same shape."""
    if not torch.is_tensor(input_ids):
        raise ValueError(f"{family}: input_ids must be the processor's input_ids tensor [batch, tokens], "
                         f"got {type(input_ids).__name__}")
    if input_ids.ndim != 2:
        raise ValueError(f"{family}: input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}; "
                         "add the batch dimension (input_ids[None])")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise ValueError(f"{family}: input_ids must hold integer token ids, got dtype {input_ids.dtype}")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"{family}: attention_mask has shape {tuple(attention_mask.shape)} but input_ids "
                         f"{tuple(input_ids.shape)}; pass the processor's input_ids and attention_mask together")


def check_pixels(pixel_values, family: str) -> None:
    """pixel_values: a floating-point tensor of finite values (the processor's normalised output)."""
    if pixel_values is None:
        return
    if not torch.is_tensor(pixel_values):
        raise ValueError(f"{family}: images must be the processor's pixel_values tensor, got "
                         f"{type(pixel_values).__name__}; run the processor on the pictures first")
    if not pixel_values.dtype.is_floating_point:
        raise ValueError(f"{family}: pixel_values must be the processor's normalised floats, got dtype "
                         f"{pixel_values.dtype} (raw pixels?); run the processor on the pictures first")
    if pixel_values.device.type != "meta" and not bool(torch.isfinite(pixel_values).all()):
        raise ValueError(f"{family}: pixel_values hold NaN or infinite values; check the images and their "
                         "preprocessing")


def check_grid(image_grid_thw, family: str) -> torch.Tensor:
    """image_grid_thw: integer (t, h, w) rows [n_img, 3], all positive -> a long tensor."""
    grid = torch.as_tensor(image_grid_thw)
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"{family}: image_grid_thw must be [images, 3] (t, h, w per image), got shape "
                         f"{tuple(grid.shape)}; pass the processor's image_grid_thw")
    if grid.dtype.is_floating_point or grid.dtype == torch.bool:
        raise ValueError(f"{family}: image_grid_thw must hold integers, got dtype {grid.dtype}; pass the "
                         "processor's image_grid_thw")
    if grid.numel() and int(grid.min()) < 1:
        raise ValueError(f"{family}: image_grid_thw holds a non-positive size ({grid.tolist()}); pass the "
                         "processor's image_grid_thw")
    return grid.long()


def check_image_sizes(image_sizes, n_images: int, family: str) -> list[tuple[int, int]]:
    """image_sizes: n_images (height, width) pairs of positive integers -> a list of int pairs."""
    sizes = image_sizes.tolist() if torch.is_tensor(image_sizes) else list(image_sizes)
    if any(not isinstance(s, (list, tuple)) or len(s) != 2 for s in sizes):
        raise ValueError(f"{family}: image_sizes must hold one (height, width) per image, got {sizes!r}; pass the "
                         "processor's image_sizes")
    if len(sizes) != n_images:
        raise ValueError(f"{family}: {len(sizes)} image_sizes for {n_images} images; pass the processor's "
                         "pixel_values and image_sizes together")
    if any(float(v) != int(v) or int(v) < 1 for s in sizes for v in s):
        raise ValueError(f"{family}: image_sizes must be positive integer (height, width) pairs, got {sizes!r}")
    return [(int(h), int(w)) for h, w in sizes]


def check_patches(pixel_values: torch.Tensor, grid: torch.Tensor, patch_embed, family: str) -> None:
    """Packed Qwen-VL patches [P, C*T*p*p]: P equals the grid's patch count and the row width the ViT's patch."""
    width = patch_embed.in_channels * patch_embed.temporal_patch_size * patch_embed.patch_size ** 2
    if pixel_values.ndim != 2 or pixel_values.shape[1] != width:
        raise ValueError(f"{family}: pixel_values must be the processor's packed patches [patches, {width}], got "
                         f"shape {tuple(pixel_values.shape)}; pass the processor's pixel_values")
    need = int(grid.prod(dim=-1).sum())
    if pixel_values.shape[0] != need:
        raise ValueError(f"{family}: pixel_values hold {pixel_values.shape[0]} patches but image_grid_thw "
                         f"{grid.tolist()} needs {need}; pass the processor's pixel_values and image_grid_thw together")


def check_context(attention_mask: torch.Tensor, text_config) -> None:
    """Refuse a spliced prompt row (text and kept visual tokens) longer than the LLM's context."""
    from .context import ContextOverflowError

    limit = getattr(text_config, "max_position_embeddings", None)
    if limit is None:
        return
    lengths = attention_mask.sum(dim=-1).tolist()  # [B]
    for row, length in enumerate(lengths):
        if length > limit:
            raise ContextOverflowError(row, int(length), int(limit))


def check_config_sections(raw: dict, sections, path) -> None:
    """A config.json must hold each of `sections` as an object (transformers would fill a missing one with the
    defaults of the largest model and then fail on every weight)."""
    for key in sections:
        if not isinstance(raw.get(key), dict):
            raise ValueError(f"{path}/config.json has no {key!r} section; restore config.json from the original "
                             "checkpoint")
