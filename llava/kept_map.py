"""Pictures of which patches a pruning method kept: kept patches bright, pruned ones dimmed."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image, ImageDraw


def model_view(image: Image.Image, image_processor, image_aspect_ratio: str = "pad", size: int = 336) -> Image.Image:
    """The square the vision tower sees: padded to square (LLaVA-1.5 'pad') or resized and center-cropped."""
    from llava.mm_utils import expand2square

    image = image.convert("RGB")
    if image_aspect_ratio == "pad":
        mean = getattr(image_processor, "image_mean", (0.5, 0.5, 0.5))
        return expand2square(image, tuple(int(x * 255) for x in mean)).resize((size, size), Image.BICUBIC)
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    resized = image.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return resized.crop((left, top, left + size, top + size))


def draw_kept_patches(
    view: Image.Image, kept: torch.Tensor | Sequence[int] | None, grid: int = 24, dim: float = 0.25, scale: int = 2
) -> Image.Image:
    """Overlay on a square `view`: patches not in `kept` (raster indices on a grid x grid) are dimmed."""
    side = view.width * scale
    canvas = view.resize((side, side), Image.NEAREST).convert("RGB")
    if kept is None:
        return canvas
    keep = set(int(i) for i in (kept.tolist() if torch.is_tensor(kept) else kept))
    step = side / grid
    shade = Image.new("L", canvas.size, 255)
    draw = ImageDraw.Draw(shade)
    for idx in range(grid * grid):
        if idx not in keep:
            r, c = divmod(idx, grid)
            draw.rectangle([c * step, r * step, (c + 1) * step - 1, (r + 1) * step - 1], fill=int(255 * dim))
    dark = Image.new("RGB", canvas.size, (0, 0, 0))
    return Image.composite(canvas, dark, shade)


def kept_grid(panels: Sequence[tuple[str, Image.Image]], columns: int = 4, pad: int = 8) -> Image.Image:
    """Lay titled panels out in a grid (titles drawn above each panel)."""
    if not panels:
        raise ValueError("no panels to draw")
    w, h = panels[0][1].size
    title_h = 18
    rows = (len(panels) + columns - 1) // columns
    cols = min(columns, len(panels))
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + title_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, (title, panel) in enumerate(panels):
        r, c = divmod(n, columns)
        x, y = pad + c * (w + pad), pad + r * (h + title_h + pad)
        draw.text((x, y), title, fill=(0, 0, 0))
        sheet.paste(panel, (x, y + title_h))
    return sheet
