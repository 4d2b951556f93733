"""Decode an image file (or bytes) to the RGB picture it shows; refuse, by name, what cannot be decoded faithfully.

Every driver, the CLI, the kept-patch picture and the analyses read images through `load_image` /
`decode_image`, so one rule decides what the model sees:
- the EXIF orientation is applied (a photo taken sideways is seen upright);
- 16-bit grey (PNG/TIFF `I;16*`, and PNG's `I`) keeps its high byte, as Pillow does for 16-bit RGB
  (`convert("RGB")` would clip every value above 255 to white);
- transparent pixels (RGBA, LA, PA, palette images with a transparent index) show white, what a viewer
  or browser shows behind them (`convert("RGB")` would expose the hidden colour, often black);
- RGB, grey, bilevel, palette, CMYK, YCbCr and HSV go through Pillow's own conversion, which is exact
  for them; RGB and grey images give the same pixels as LLaVA's `Image.open(path).convert("RGB")`.
- anything else (float `F`, 32-bit integer `I` outside PNG, `LAB`, ...) raises, naming the file.
"""

from __future__ import annotations

import io
import os
import urllib.request
from typing import Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

WHITE = (255, 255, 255)


class ImageDecodeError(ValueError):
    """An image file that cannot be read, or whose pixels cannot be shown as RGB faithfully."""


def _pillow(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def _over_white(image: Image.Image) -> Image.Image:
    """Alpha-composite over white (premultiplied `RGBa`/`La` are un-premultiplied by Pillow first)."""
    rgba = image.convert("LA").convert("RGBA") if image.mode == "La" else image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, WHITE + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _palette(image: Image.Image) -> Image.Image:
    return _over_white(image) if "transparency" in image.info else image.convert("RGB")


def _high_byte(image: Image.Image) -> Image.Image:
    """16-bit grey -> 8-bit grey by its high byte (value >> 8), then RGB."""
    values = np.asarray(image).astype(np.uint32)  # [H, W], 0..65535
    return Image.fromarray((values >> 8).astype(np.uint8), mode="L").convert("RGB")


def _int32(image: Image.Image) -> Image.Image | None:
    """Pillow opens 16-bit grey PNGs as `I` in some versions: those are 16-bit; other `I` images are refused."""
    if image.format == "PNG":
        return _high_byte(image)
    return None


# Pillow mode -> converter to RGB (None: refuse). Modes not listed are refused.
CONVERTERS: dict[str, Callable[[Image.Image], Image.Image | None]] = {
    **{mode: _pillow for mode in ("RGB", "L", "1", "CMYK", "YCbCr", "HSV", "RGBX")},
    **{mode: _over_white for mode in ("RGBA", "LA", "PA", "RGBa", "La")},
    "P": _palette,
    **{mode: _high_byte for mode in ("I;16", "I;16L", "I;16B", "I;16N")},
    "I": _int32,
}


def to_rgb(image: Image.Image, name: str) -> Image.Image:
    """The RGB picture `image` shows (EXIF orientation applied); ImageDecodeError naming `name` otherwise."""
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError(f"image {name}: cannot decode it ({err}); check or re-download the file") from None
    upright.format = image.format
    converter = CONVERTERS.get(upright.mode)
    rgb = converter(upright) if converter else None
    if rgb is None:
        raise ImageDecodeError(
            f"image {name}: pixel mode {upright.mode} ({image.format or 'unknown format'}) cannot be shown as RGB "
            f"faithfully; convert it to an 8- or 16-bit RGB or grey PNG/JPEG first")
    return rgb


def decode_image(data: bytes, name: str) -> Image.Image:
    """Decode image bytes (e.g. base64-decoded from a TSV); `name` identifies them in errors."""
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageDecodeError(f"image {name}: not a readable image ({err})") from None
    with image:
        return to_rgb(image, name)


def load_image(path_or_url: str | os.PathLike) -> Image.Image:
    """Open an image file (or http(s) URL) as the RGB picture it shows; errors name the path."""
    source = str(path_or_url)
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                return decode_image(response.read(), source)
        except OSError as err:
            raise OSError(f"could not download image {source!r}: {err}") from err
    if not os.path.isfile(source):
        raise FileNotFoundError(f"image file {source!r} not found (working directory {os.getcwd()!r})")
    try:
        image = Image.open(source)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageDecodeError(f"image {source}: not a readable image file ({err}); check or re-download it") from None
    with image:
        return to_rgb(image, source)
