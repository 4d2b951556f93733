"""LLaVA-NeXT (v1.6) "anyres" geometry: grid choice, crops, and the order of visual tokens.

An image is resized (keeping its aspect ratio) and padded onto the best of the checkpoint's grid
resolutions, cut into S x S crops, and a base view of the whole image is added in front. Each crop
gives side x side CLIP patches. In the LLM the base view's patches come first, then the crops'
patches merged into one big (rows x cols) grid read row by row; with 'unpad' the rows/columns that
only cover padding are dropped and a learned newline token ends each row.

`token_layout` describes that order as (crop, patch) references so that selection can happen on
CLIP features before the projector and only kept tokens get projected.
Resolutions are (width, height) pairs, as in the original LLaVA-NeXT code.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image

from llava.pruning.config import ANYRES_MODES

NEWLINE = -1  # crop index used for newline slots in a layout


def parse_pinpoints(grid_pinpoints) -> list[tuple[int, int]]:
    """`image_grid_pinpoints` from a config (a list or its string form) as (width, height) pairs."""
    if isinstance(grid_pinpoints, str):
        grid_pinpoints = ast.literal_eval(grid_pinpoints)
    return [(int(w), int(h)) for w, h in grid_pinpoints]


def select_best_resolution(image_size: tuple[int, int], resolutions: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The grid resolution that keeps most of the image's pixels, then wastes the least canvas.

    image_size and resolutions are (width, height). Ties keep the earlier resolution.
    """
    width, height = image_size
    best, best_effective, best_wasted = None, -1, math.inf
    for res_w, res_h in resolutions:
        scale = min(res_w / width, res_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        wasted = res_w * res_h - effective
        if effective > best_effective or (effective == best_effective and wasted < best_wasted):
            best, best_effective, best_wasted = (res_w, res_h), effective, wasted
    return best


def grid_shape(image_size: tuple[int, int], grid_pinpoints, crop_size: int) -> tuple[int, int]:
    """(columns, rows) of crops for an image of (width, height)."""
    res_w, res_h = select_best_resolution(image_size, parse_pinpoints(grid_pinpoints))
    return res_w // crop_size, res_h // crop_size


def resize_and_pad(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Fit `image` inside target (width, height) keeping its aspect ratio, centred on black."""
    width, height = image.size
    target_w, target_h = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        new_w, new_h = target_w, min(math.ceil(height * scale_w), target_h)
    else:
        new_w, new_h = min(math.ceil(width * scale_h), target_w), target_h
    canvas = Image.new("RGB", (target_w, target_h), (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h)), ((target_w - new_w) // 2, (target_h - new_h) // 2))
    return canvas


def crops(image: Image.Image, size: int) -> list[Image.Image]:
    """size x size crops of `image`, row by row."""
    return [image.crop((x, y, x + size, y + size)) for y in range(0, image.height, size)
            for x in range(0, image.width, size)]


def anyres_views(image: Image.Image, grid_pinpoints, crop_size: int, base_size: int) -> list[Image.Image]:
    """The base view (the whole image squashed to base_size) followed by the grid crops."""
    best = select_best_resolution(image.size, parse_pinpoints(grid_pinpoints))
    return [image.resize((base_size, base_size))] + crops(resize_and_pad(image, best), crop_size)


def unpadded_extent(image_size: tuple[int, int], rows: int, cols: int) -> tuple[slice, slice]:
    """Row and column ranges of a (rows x cols) patch grid that cover the image, not its padding."""
    width, height = image_size
    if width / height > cols / rows:
        kept = int(height * (cols / width))
        pad = (rows - kept) // 2
        return slice(pad, rows - pad), slice(0, cols)
    kept = int(width * (rows / height))
    pad = (cols - kept) // 2
    return slice(0, rows), slice(pad, cols - pad)


@dataclass
class TokenLayout:
    """The LLM order of one image's visual tokens.

    crop: [T] long, the view each slot reads (0 = base view, 1.. = grid crops, NEWLINE = newline token);
    patch: [T] long, the patch within that view (raster index; -1 for newlines);
    row: [T] long, the merged-grid row of a grid slot or newline (-1 for base slots).
    """

    crop: torch.Tensor
    patch: torch.Tensor
    row: torch.Tensor

    def __len__(self) -> int:
        return self.crop.shape[0]

    def subset(self, keep: torch.Tensor) -> "TokenLayout":
        return TokenLayout(self.crop[keep], self.patch[keep], self.row[keep])


def token_layout(
    num_crops: int, side: int, grid: tuple[int, int] | None, image_size: tuple[int, int] | None,
    unpad: bool, newline: bool,
) -> TokenLayout:
    """Slots for the base view plus a (cols x rows) grid of crops, each side x side patches.

    num_crops counts the grid crops (0: base view only, then a trailing newline if `newline`).
    """
    base = side * side
    crop = [torch.zeros(base, dtype=torch.long)]
    patch = [torch.arange(base)]
    row = [torch.full((base,), -1)]
    if num_crops == 0:
        if newline:
            crop.append(torch.tensor([NEWLINE]))
            patch.append(torch.tensor([-1]))
            row.append(torch.tensor([-1]))
        return TokenLayout(torch.cat(crop), torch.cat(patch), torch.cat(row))
    cols, rows = grid
    if cols * rows != num_crops:
        raise ValueError(f"a {cols}x{rows} grid needs {cols * rows} crops, got {num_crops}")
    big_rows, big_cols = rows * side, cols * side
    r_range, c_range = (unpadded_extent(image_size, big_rows, big_cols) if unpad
                        else (slice(0, big_rows), slice(0, big_cols)))
    rr = torch.arange(big_rows)[r_range]
    cc = torch.arange(big_cols)[c_range]
    view = 1 + (rr[:, None] // side) * cols + (cc[None, :] // side)  # [R, C]
    within = (rr[:, None] % side) * side + (cc[None, :] % side)  # [R, C]
    rows_idx = rr[:, None].expand(-1, len(cc))
    if newline:
        view = torch.cat([view, torch.full((len(rr), 1), NEWLINE)], dim=1)
        within = torch.cat([within, torch.full((len(rr), 1), -1)], dim=1)
        rows_idx = torch.cat([rows_idx, rr[:, None]], dim=1)
    crop.append(view.flatten())
    patch.append(within.flatten())
    row.append(rows_idx.flatten())
    return TokenLayout(torch.cat(crop), torch.cat(patch), torch.cat(row))


def anyres_pinpoints(config, crop_size: int, mode: str = "faithful") -> list[tuple[int, int]]:
    """Grid resolutions to choose from: the checkpoint's, or FasterVLM's fixed 2x2 grid in 'paper' mode."""
    if mode not in ANYRES_MODES:
        raise ValueError(f"anyres_mode must be one of {ANYRES_MODES}, not {mode!r}")
    if mode == "paper":
        return [(2 * crop_size, 2 * crop_size)]
    pinpoints = getattr(config, "image_grid_pinpoints", None)
    if not pinpoints:
        raise ValueError("image_aspect_ratio='anyres' needs image_grid_pinpoints in the model config")
    return parse_pinpoints(pinpoints)


def views_per_image(image_size: tuple[int, int], pinpoints, crop_size: int) -> int:
    """1 base view + the grid crops for an image of (width, height)."""
    cols, rows = grid_shape(image_size, pinpoints, crop_size)
    return 1 + cols * rows
