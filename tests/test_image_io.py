"""Each kind of image file decodes to the pixels it shows; the ones Pillow cannot convert faithfully are refused by name."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.image_io import ImageDecodeError, decode_image, load_image


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


def test_16_bit_grey_png_keeps_its_values(tmp_path: Path) -> None:
    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([[0, 4112, 32896, 65535]], dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    got = _pixels(load_image(path))
    assert got[0].tolist() == [[0, 0, 0], [16, 16, 16], [128, 128, 128], [255, 255, 255]]
    # what Pillow's own convert("RGB") gives: everything above 255 turns white
    assert np.asarray(Image.open(path).convert("RGB"))[0, :, 0].tolist() == [0, 255, 255, 255]


def test_16_bit_grey_tiff(tmp_path: Path) -> None:
    path = tmp_path / "grey16.tif"
    Image.fromarray(np.array([[256, 51400]], dtype=np.uint16)).save(path)
    assert _pixels(load_image(path))[0, :, 1].tolist() == [1, 200]


def test_palette_with_transparency_shows_white_behind(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.new("P", (3, 1))
    image.putpalette([0, 0, 0, 200, 10, 20, 5, 90, 160] + [0] * (256 * 3 - 9))
    image.putdata([0, 1, 2])
    image.save(path, transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    assert _pixels(load_image(path))[0].tolist() == [[255, 255, 255], [200, 10, 20], [5, 90, 160]]
    opaque = tmp_path / "opaque.png"
    image.save(opaque)
    assert _pixels(load_image(opaque))[0].tolist() == [[0, 0, 0], [200, 10, 20], [5, 90, 160]]


def test_grey_with_alpha(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    image = Image.new("LA", (3, 1))
    image.putdata([(100, 0), (100, 255), (100, 128)])
    image.save(path)
    # 100 * 128/255 + 255 * 127/255 = 177.2
    assert _pixels(load_image(path))[0, :, 0].tolist() == [255, 100, 177]


def test_rgba_composites_over_white(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    image = Image.new("RGBA", (2, 1))
    image.putdata([(10, 20, 30, 255), (0, 0, 0, 0)])
    image.save(path)
    assert _pixels(load_image(path))[0].tolist() == [[10, 20, 30], [255, 255, 255]]


def test_cmyk(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.tif"
    image = Image.new("CMYK", (3, 1))
    image.putdata([(255, 0, 0, 0), (0, 255, 255, 0), (0, 0, 0, 128)])
    image.save(path)
    assert _pixels(load_image(path))[0].tolist() == [[0, 255, 255], [255, 0, 0], [127, 127, 127]]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    """Orientation 6 (stored turned left, shown after a 90-degree clockwise turn): left column -> top row."""
    path = tmp_path / "sideways.png"
    image = Image.new("RGB", (4, 2), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 2, 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, exif=exif)
    got = load_image(path)
    assert got.size == (2, 4)
    assert _pixels(got)[:, 0].tolist() == [[255, 0, 0], [255, 0, 0], [0, 0, 255], [0, 0, 255]]


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_rgb_and_grey_equal_llavas_decoding(tmp_path: Path, mode: str) -> None:
    path = tmp_path / f"x_{mode}.jpg"
    rng = np.random.default_rng(0)
    shape = (6, 5, 3) if mode == "RGB" else (6, 5)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode).save(path)
    assert np.array_equal(_pixels(load_image(path)), np.asarray(Image.open(path).convert("RGB")))


def test_unfaithful_modes_are_refused_by_name(tmp_path: Path) -> None:
    wide = tmp_path / "int32.tif"
    Image.fromarray(np.array([[0, 1 << 20]], dtype=np.int32)).save(wide)
    with pytest.raises(ImageDecodeError) as err:
        load_image(wide)
    assert str(err.value) == (f"image {wide}: pixel mode I (TIFF) cannot be shown as RGB faithfully; convert it to "
                              f"an 8- or 16-bit RGB or grey PNG/JPEG first")
    floats = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.5, 2.0]], dtype=np.float32)).save(floats)
    with pytest.raises(ImageDecodeError) as err:
        load_image(floats)
    assert str(err.value) == (f"image {floats}: pixel mode F (TIFF) cannot be shown as RGB faithfully; convert it to "
                              f"an 8- or 16-bit RGB or grey PNG/JPEG first")


def test_decode_image_bytes_and_errors() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.array([[65535]], dtype=np.uint16)).save(buf, format="PNG")
    assert _pixels(decode_image(buf.getvalue(), "question 7"))[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(ImageDecodeError, match=r"^image question 7: not a readable image \(cannot identify"):
        decode_image(b"not an image", "question 7")


def test_mode_i_from_a_png_is_16_bit() -> None:
    """Older Pillow releases open 16-bit grey PNGs as mode I; those values are 16-bit too."""
    from llava.image_io import to_rgb

    image = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32), mode="I")
    image.format = "PNG"
    assert _pixels(to_rgb(image, "x.png"))[0, :, 2].tolist() == [0, 128, 255]
