"""The kept-patch picture: padding bands, legend, the random-weights note, and labels of at least 10 pt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from llava.kept_map import DPI, FONT_PX, RANDOM_NOTE, draw_kept_patches, kept_grid, main, pad_bands, weights_are_random

SAMPLES = Path(__file__).resolve().parents[1] / "assets" / "samples"
RED = (200, 0, 0)


def test_pad_bands_are_where_expand2square_pads():
    assert pad_bands((480, 320), "pad", 336) == [(0, 0, 336, 56), (0, 280, 336, 336)]  # 80 px of 480 -> 56 of 336
    assert pad_bands((300, 420), "pad", 336) == [(0, 0, 48, 336), (288, 0, 336, 336)]
    assert pad_bands((400, 400), "pad", 336) == [] and pad_bands((480, 320), "anyres", 336) == []


def test_bands_are_hatched_and_the_image_is_not():
    view = Image.new("RGB", (336, 336), (0, 0, 0))
    drawn = np.asarray(draw_kept_patches(view, None, scale=1, bands=pad_bands((480, 320))))
    assert drawn[:56].max() == 255 and drawn[280:].max() == 255  # white hatch lines in both bands
    assert drawn[57:279].max() == 0  # nothing drawn over the image itself


def test_random_weights_marker(tiny_path, tmp_path):
    assert weights_are_random(tiny_path)
    trained = tmp_path / "trained"
    trained.mkdir()
    raw = json.loads((Path(tiny_path) / "config.json").read_text())
    raw.pop("random_weights")
    (trained / "config.json").write_text(json.dumps(raw))
    assert not weights_are_random(str(trained)) and not weights_are_random(str(tmp_path / "nowhere"))


def _has(image: Image.Image, colour) -> bool:
    return bool((np.asarray(image.convert("RGB")) == colour).all(axis=-1).any())


def test_picture_has_note_legend_and_readable_labels(tiny_path, tmp_path, capsys):
    out = tmp_path / "kept.png"
    main(["--model-path", tiny_path, "--image-file", str(SAMPLES / "shapes.png"), "--visual-token-num", "576,58",
          "--pruning-method", "fastervlm", "--device", "cpu", "--out", str(out)])
    assert capsys.readouterr().out == f"kept-patch grid written to {out} (random weights: see the note in the picture)\n"
    sheet = Image.open(out)
    assert tuple(round(v) for v in sheet.info["dpi"]) == (DPI, DPI) and FONT_PX / DPI * 72 >= 10
    # pad, title and note lines, one row of (label, panel, pad), legend, pad, pad
    assert sheet.size == (2 * (336 + 8) + 8, 8 + 2 * 24 + (24 + 336 + 8) + 28 + 8 + 8)
    assert _has(sheet.crop((0, 8 + 24, sheet.width, 8 + 48)), RED)  # the random-weights note, second line
    legend = sheet.crop((0, sheet.height - 8 - 28 - 8, sheet.width, sheet.height))
    assert _has(legend, (150, 150, 150)) and _has(legend, (37, 37, 37))  # kept and dimmed swatches
    plain = kept_grid([("x", Image.new("RGB", (336, 336)))], title="t")
    assert not _has(plain, RED) and plain.height == 8 + 24 + (24 + 336 + 8) + 28 + 8 + 8
    noted = kept_grid([("x", Image.new("RGB", (336, 336)))], title="t", notes=[RANDOM_NOTE])
    assert _has(noted, RED) and noted.height == plain.height + 24
