"""`prepare_hf` on the video-QA benchmarks with bad flags or a clashing output folder. Before: --limit 0
converted every question and --limit -1 silently dropped the last one; an --out-dir whose video folder
already pointed elsewhere was only a note, after the question files naming videos it does not hold
had been written. Now both are refused, and nothing is written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from test_catalogue_video import LAYOUT, fake_copy, prepare  # noqa: E402


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_a_limit_below_one_is_refused(tmp_path, limit):
    src = fake_copy(tmp_path / "src", "msvd")
    with pytest.raises(ValueError, match=rf"^--limit must be >= 1 \(the first N questions\), got {limit}$"):
        prepare("msvd", src, tmp_path / "out", "--limit", limit)
    assert not (tmp_path / "out").exists()


def test_an_out_dir_whose_video_folder_is_another_is_refused_before_writing(tmp_path):
    src = fake_copy(tmp_path / "src", "msvd")
    folder = LAYOUT["msvd"][0]
    other = tmp_path / "out" / folder
    other.mkdir(parents=True)
    with pytest.raises(ValueError, match=rf"^msvd: {other} already exists and is not {src / folder}, so the questions "
                                         r"would name videos of another folder; remove it or choose another --out-dir$"):
        prepare("msvd", src, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [folder]  # no question or answer file written
