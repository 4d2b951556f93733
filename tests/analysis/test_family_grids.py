"""Kept-patch pictures on every family's own grid: the dimmed cells are exactly the pruned candidates.

Each family's tiny checkpoint is loaded; a uniform-colour image is drawn with a fastervlm budget, and
the colour at every cell centre says kept (the image's colour) or pruned (dimmed), which must match
the kept ids the model's own encoder returned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.analysis.family_grids import get_grid_family, list_grid_families, load, merged_grid_panel
from llava.kept_map import draw_panel, family_rows
from llava.pruning import PruningConfig

COLOUR = (200, 160, 120)
DIM = 0.25


@pytest.fixture(scope="module")
def ov_path(tmp_path_factory):
    from llava.model.family_onevision import save_tiny_onevision

    # anyres_max_2: a 300 x 500 image's grid is down-sampled, so that path is drawn too
    return str(save_tiny_onevision(tmp_path_factory.mktemp("ov") / "tiny", vision_aspect_ratio="anyres_max_2"))


@pytest.fixture(scope="module")
def loaded(tiny_path, next_path, ov_path, tmp_path_factory):
    qwen = tmp_path_factory.mktemp("qwen")
    paths = [("llava-1.5", tiny_path), ("llava-next", next_path), ("llava-onevision", ov_path)]
    paths += [(name, get_grid_family(name).tiny(qwen / name)) for name in ("qwen2.5-vl", "qwen3-vl")]
    return {name: load(path) for name, path in paths}


def _centres_agree(panel, drawn: Image.Image, kept) -> int:
    """Checks every cell centre against the undimmed panel; returns how many cells are kept."""
    pixels = np.asarray(drawn).astype(int)
    source = np.asarray(panel.image.convert("RGB")).astype(int)  # a cut grid's edge cell may cover padding
    keep = set(kept)
    n_kept = 0
    for cid, (x0, y0, x1, y1) in zip(panel.ids.tolist(), panel.boxes.tolist()):
        y, x = int((y0 + y1) / 2), int((x0 + x1) / 2)
        expected = source[y, x] if cid in keep else (source[y, x] * DIM).astype(int)
        assert np.abs(pixels[y, x] - expected).max() <= 2, (panel.title, cid, pixels[y, x], expected)
        n_kept += cid in keep
    assert (source == COLOUR).all(axis=-1).mean() > 0.5  # mostly image, so dimming shows
    return n_kept


@pytest.mark.parametrize("name,size,k", [("llava-1.5", (400, 400), 64), ("llava-next", (500, 300), 100),
                                         ("llava-onevision", (500, 300), 64), ("llava-onevision", (300, 1000), 200),
                                         ("qwen2.5-vl", (500, 300), 40), ("qwen3-vl", (300, 500), 40)])
def test_dimmed_cells_are_exactly_the_pruned_candidates(loaded, name, size, k):
    family, model = loaded[name]
    assert family.name == name
    image = Image.new("RGB", size, COLOUR)
    panels = family.grid(model, image)
    kept = family.kept(model, image, PruningConfig("fastervlm", k))
    ids = np.concatenate([p.ids for p in panels])
    assert len(set(ids.tolist())) == len(ids)  # one box per candidate
    n_kept = sum(_centres_agree(p, draw_panel(p, kept, dim=DIM), kept) for p in panels)
    drawn_ids = set(ids.tolist())
    if name == "llava-1.5":
        assert n_kept == k and len(ids) == 576
    elif name == "llava-next":  # kept newline slots have no box; every kept token has one
        from llava.anyres import NEWLINE
        from llava.analysis.family_grids import next_layout

        layout = next_layout(model.model, image.size)[0]
        tokens = [s for s in kept if int(layout.crop[s]) != NEWLINE]
        assert set(tokens) <= drawn_ids and n_kept == len(tokens) and len(kept) <= k
    elif name == "llava-onevision":  # K counts newlines too; every kept candidate is drawn
        assert set(kept) <= drawn_ids and n_kept == len(kept) and len(kept) <= k
    else:  # Qwen: K merged tokens, each a 2 x 2 block of patches on the resized image
        side = {"qwen2.5-vl": 28, "qwen3-vl": 32}[name]
        (panel,) = panels
        assert n_kept == k and panel.image.width % side == 0 and panel.image.height % side == 0
        assert len(ids) == panel.image.width * panel.image.height // side ** 2
        np.testing.assert_allclose(panel.boxes[:, 2] - panel.boxes[:, 0], side)


def test_onevision_grid_boxes_follow_the_down_sampled_grid(loaded):
    from llava.model.onevision import OneVisionGeometry, image_grid

    family, model = loaded["llava-onevision"]
    image = Image.new("RGB", (300, 1000), COLOUR)  # (w, h): a tall 3 x 1 grid
    g = image_grid((1000, 300), OneVisionGeometry.from_config(model.raw))
    assert g.downsampled
    base, grid = family.grid(model, image)
    assert len(base.ids) == 729 and len(grid.ids) == g.out_h * g.out_w
    assert grid.ids[0] == 729 and grid.ids[-1] == 729 + g.out_h * g.out_w - 1
    # the boxes tile the cut region without gaps: widths sum to its width row by row
    widths = (grid.boxes[:, 2] - grid.boxes[:, 0]).reshape(g.out_h, g.out_w).sum(axis=1)
    cut_w = (g.cut_cols.stop - g.cut_cols.start) * 384 / 27
    np.testing.assert_allclose(widths, cut_w)


def test_qwen_merged_grid_helper_draws_28_and_32_px_tokens():
    image = Image.new("RGB", (100, 60), COLOUR)
    for patch, side in [(14, 28), (16, 32)]:
        panel = merged_grid_panel(image, grid_h=4, grid_w=6, patch=patch)
        assert panel.image.size == (6 * patch, 4 * patch) and len(panel.ids) == 6
        np.testing.assert_allclose(panel.boxes[4], [side, side, 2 * side, 2 * side])  # row 1, col 1 of 2 x 3
        drawn = draw_panel(panel, [0, 4], dim=DIM)
        assert _centres_agree(panel, drawn, [0, 4]) == 2
    with pytest.raises(ValueError, match="does not split into 2x2 merge groups"):
        merged_grid_panel(image, 3, 6, 14)


def test_the_families_figure_has_one_row_per_family_with_the_drawn_counts(loaded, tiny_path, next_path, ov_path,
                                                                          tmp_path):
    assert list_grid_families() == ["llava-1.5", "llava-next", "llava-onevision", "qwen2.5-vl", "qwen3-vl"]
    image = Image.new("RGB", (500, 300), COLOUR)
    paths = {"llava-1.5": tiny_path, "llava-next": next_path, "llava-onevision": ov_path}
    rows, random = family_rows(list(paths), paths, image, ["fastervlm"], [64], tmp_path, height=120)
    assert random and [label.split()[0] for label, _ in rows] == list(paths)
    assert "64 of 576 tokens kept" in rows[0][0]
    assert [len(panels) for _, panels in rows] == [1, 2, 2]
    assert all(im.height == 120 for _, panels in rows for _, im in panels)
    with pytest.raises(ValueError, match="unknown family 'qwen9'"):
        get_grid_family("qwen9")


def test_the_families_command_with_a_given_checkpoint(tiny_path, tmp_path, capsys):
    from llava.kept_map import main

    out = tmp_path / "fam.png"
    image = str(Path(__file__).resolve().parents[2] / "assets" / "samples" / "shapes.png")
    main(["--families", "llava-1.5", "--family-model", f"llava-1.5={tiny_path}", "--image-file", image,
          "--visual-token-num", "64,16", "--out", str(out), "--device", "cpu"])
    assert "kept-patch pictures of 1 families written" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.width > 240 and im.height > 2 * 240  # two rows (K = 64, 16) of one 240 px panel
    with pytest.raises(ValueError, match="expected FAMILY=PATH"):
        main(["--families", "llava-1.5", "--family-model", "llava-1.5", "--image-file", image, "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="folder /nowhere not found"):
        main(["--families", "llava-1.5", "--family-model", "llava-1.5=/nowhere", "--image-file", image,
              "--out", str(out)])
