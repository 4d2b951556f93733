"""`python -m llava.eval.make_mini_data` writes a data root for every benchmark script, and never over real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval.make_mini_data import MARKER, build_data_root, main

REPO = Path(__file__).resolve().parents[2]


def test_writes_every_benchmark_and_says_what_to_run(tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        f"wrote 12 benchmarks, 37 questions, to {out}",
        "try one script on the tiny random-weight model (its scores mean nothing):",
        "  python -m llava.model.tiny --out playground/tiny",
        f"  DATA_ROOT={out} CKPT=playground/tiny/llava-v1.5-tiny DEVICE=cpu MAX_NEW_TOKENS=8 "
        "bash scripts/v1_5/eval/pope.sh 58",
    ]
    scripts = {p.stem for p in (REPO / "scripts" / "v1_5" / "eval").glob("*.sh")} - {"common", "family"}  # the shared machinery
    assert scripts == {"pope", "mme", "textvqa", "gqa", "vqav2", "vizwiz", "seed", "sqa", "mmbench", "mmbench_cn",
                       "mmvet", "llavabench"}
    pope = [json.loads(line) for line in (out / "pope" / "llava_pope_test.jsonl").read_text().splitlines()]
    assert [q["image"] for q in pope] == ["a.png", "b.png", "a.png", "b.png"]
    assert all((out / "pope" / "val2014" / q["image"]).is_file() for q in pope)
    from PIL import Image

    with Image.open(out / "gqa" / "data" / "images" / "n0.jpg") as image:  # a sample, saved as what its name says
        assert image.format == "JPEG" and image.size == (400, 400)
    assert main(["--out", str(out)]) == 0  # rebuilding its own folder is fine


def test_refuses_a_folder_with_other_data_and_missing_samples(tmp_path):
    real = tmp_path / "real"
    (real / "pope").mkdir(parents=True)
    (real / "pope" / "llava_pope_test.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError) as err:
        build_data_root(real)
    assert str(err.value) == (f"{real} already holds files that make_mini_data did not write (real benchmark data?); "
                              f"pick an empty or new folder with --out")
    assert (real / "pope" / "llava_pope_test.jsonl").read_text() == "{}\n" and not (real / MARKER).exists()
    proc = subprocess.run([sys.executable, "-m", "llava.eval.make_mini_data", "--out", str(tmp_path / "x"),
                           "--samples", str(tmp_path / "none")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: no sample images (*.png) in {tmp_path / 'none'}; pass --samples DIR, or recreate "
                           f"them with: python scripts/make_sample_data.py\n")
