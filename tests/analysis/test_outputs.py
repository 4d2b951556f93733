"""Files, plots, --replot, skipped samples, prompts and the shell scripts of the two analyses."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from analysis_helpers import MEASURED, RECORDS, SAMPLES, run_args, write_mini_jsonl
from PIL import Image

from llava.analysis import attn_dispersion, attn_shift, common
from llava.constants import IMAGE_TOKEN_INDEX

REPO = Path(__file__).resolve().parents[2]
SHIFT_PNGS = ["attn_shift_position.png", "attn_shift_curves.png", "attn_shift_maps.png", "cls_attn.png"]
DISPERSION_PNGS = ["attn_dispersion_cumulative.png", "attn_dispersion_hist.png"]


def _check_png(path: Path, min_side: int = 400) -> None:
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= min_side, path
        assert len(im.getcolors(1 << 20) or range(1 << 20)) > 16, f"{path} looks blank"


def _check_skips(stats: dict) -> None:
    assert stats["num_records"] == len(RECORDS)
    assert stats["num_samples"] == len(MEASURED)
    assert stats["num_skipped"] == 2
    reasons = {s["id"]: s["reason"] for s in stats["skipped"]}
    assert set(reasons) == {"gone", "text-only"}
    assert "not_there.png" in reasons["gone"] and "--image-folder" in reasons["gone"]


def test_shift_outputs(shift_run):
    stats, out = shift_run
    _check_skips(stats)
    assert stats["plot_layers"] == [0, 2, 3] and stats["num_llm_layers"] == 4
    assert stats["grid"] == 24 and stats["num_image_tokens"] == 576
    on_disk = json.loads((out / attn_shift.STATS_FILE).read_text())
    assert on_disk["llm"]["last_token"] == stats["llm"]["last_token"]
    for kind in attn_shift.KINDS:
        assert len(stats["llm"][kind]) == 4 and all(len(row) == 576 for row in stats["llm"][kind])
    # the last token's attention over the image is part of a distribution: positive, below 1 in sum
    assert all(0 < sum(row) < 1 for row in stats["llm"]["last_token"])
    assert sum(stats["cls_attn"]) == pytest.approx(1, abs=0.05)
    with (out / attn_shift.CSV_FILE).open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 * 4 * 576 + 576
    last = next(r for r in rows if r["source"] == "last_token" and r["layer"] == "3" and r["position"] == "25")
    assert (int(last["row"]), int(last["col"])) == (1, 1)
    assert float(last["value"]) == pytest.approx(stats["llm"]["last_token"][3][25], rel=1e-6)
    for name in SHIFT_PNGS:
        _check_png(out / name)


def test_dispersion_outputs(dispersion_run):
    stats, out = dispersion_run
    _check_skips(stats)
    assert stats["layer"] == 2
    for name in DISPERSION_PNGS:
        _check_png(out / name)
    with (out / attn_dispersion.SAMPLES_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == MEASURED
    with (out / attn_dispersion.SUMMARY_CSV).open() as f:
        summary = {r["source"]: r for r in csv.DictReader(f)}
    assert float(summary["llm"]["entropy"]) == pytest.approx(stats["summary_mean"]["llm"]["entropy"])
    assert summary["cls"]["layer"] == "-2"
    hist = stats["histogram"]
    assert sum(hist["llm"]) + hist["below"]["llm"] == len(MEASURED) * 576


@pytest.mark.parametrize("module,stats_file,pngs", [
    (attn_shift, attn_shift.STATS_FILE, SHIFT_PNGS),
    (attn_dispersion, attn_dispersion.STATS_FILE, DISPERSION_PNGS),
])
def test_replot_draws_without_the_model(module, stats_file, pngs, shift_run, dispersion_run, tmp_path, monkeypatch):
    _, out = shift_run if module is attn_shift else dispersion_run

    def no_model(*_a, **_k):
        raise AssertionError("--replot must not load the model")

    monkeypatch.setattr(common, "load_model", no_model)
    extra = ["--layers", "1"] if module is attn_shift else []
    stats = module.main(["--replot", str(out / stats_file), "--output-dir", str(tmp_path), *extra])
    assert stats["analysis"] == module.__name__.rsplit(".", 1)[1]
    for name in pngs:
        _check_png(tmp_path / name)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"analysis": "something_else"}))
    with pytest.raises(ValueError, match=f"not {stats['analysis']!r}"):  # another analysis' stats are refused
        module.main(["--replot", str(wrong)])


def test_first_human_turn_prompts_and_skips_are_logged(tiny, mini_data, caplog):
    tokenizer, model, processor, _ = tiny
    log = common.RunLog()
    with caplog.at_level(logging.WARNING, logger="llava.analysis"):
        batches = list(common.iter_batches(common.read_records(str(mini_data)), tokenizer, processor, model.config,
                                           "vicuna_v1", str(SAMPLES), 8, log))
    assert len(batches) == 1 and batches[0].ids == MEASURED
    assert "sample gone skipped" in caplog.text and "not_there.png" in caplog.text
    assert "sample text-only skipped" in caplog.text
    assert log.num_records == 4 and len(log.skipped) == 2
    batch = batches[0]
    assert ((batch.input_ids == IMAGE_TOKEN_INDEX).sum(dim=1) == 1).all()
    row = batch.input_ids[0][batch.attention_mask[0].bool()]
    text = tokenizer.decode(row[row >= 0])
    assert "What shapes are in the image?" in text and "Any more?" not in text  # the first turn only
    assert text.rstrip().endswith("ASSISTANT:")
    assert batch.images.shape == (2, 3, 336, 336)


def test_no_usable_sample_exits_with_the_count(tiny_path, tmp_path):
    data = tmp_path / "none.jsonl"
    data.write_text(json.dumps(RECORDS[1]) + "\n")  # only the missing image
    with pytest.raises(SystemExit, match="1 skipped"):
        attn_dispersion.main(run_args(tiny_path, data, tmp_path / "out"))
    stats = json.loads((tmp_path / "out" / attn_dispersion.STATS_FILE).read_text())
    assert stats["num_samples"] == 0 and stats["skipped"][0]["id"] == "gone"


def test_bad_flags_are_reported(tiny_path, mini_data, tmp_path, capsys):
    with pytest.raises(SystemExit):
        attn_shift.main(["--data-file", str(mini_data)])
    assert "--model-path is required" in capsys.readouterr().err
    with pytest.raises(ValueError, match="out of range for a 4-layer model"):
        attn_dispersion.main(run_args(tiny_path, mini_data, tmp_path, "--layer", "7"))


@pytest.mark.parametrize("script,module", [("analyze_attn_shift.sh", "llava.analysis.attn_shift"),
                                           ("analyze_attn_dispersion.sh", "llava.analysis.attn_dispersion")])
def test_shell_scripts_pass_defaults_and_overrides(script, module, tmp_path):
    fake = tmp_path / "fake_python"
    fake.write_text('#!/bin/bash\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    fake.chmod(0o755)
    data = write_mini_jsonl(tmp_path / "d.jsonl")
    env = {**os.environ, "PYTHON": str(fake), "ARGS_OUT": str(tmp_path / "args"), "CKPT": "ck", "DATA_FILE": str(data),
           "IMAGE_FOLDER": "imgs", "NUM_SAMPLES": "7", "OUT": "o"}
    subprocess.run(["bash", str(REPO / "scripts" / script), "--extra"], env=env, check=True, cwd=tmp_path)
    args = (tmp_path / "args").read_text().split("\n")
    assert args[:2] == ["-m", module]
    pairs = dict(zip(args[2:], args[3:]))
    assert pairs["--model-path"] == "ck" and pairs["--data-file"] == str(data) and pairs["--image-folder"] == "imgs"
    assert pairs["--num-samples"] == "7" and pairs["--output-dir"] == "o" and pairs["--conv-mode"] == "vicuna_v1"
    assert "--extra" in args
    env.pop("DATA_FILE")
    env["FASTERVLM_REFERENCE"] = str(tmp_path / "no-reference")
    missing = subprocess.run(["bash", str(REPO / "scripts" / script)], env=env, cwd=tmp_path,
                             capture_output=True, text=True)
    where = ("error: DATA_FILE ./playground/data/analysis/llava_v1_5_mix1k.jsonl not found. The 1K analysis subset "
             "llava_v1_5_mix1k.jsonl is in FasterVLM's\n  repository (github.com/Theia-4869/FasterVLM, "
             "playground/data/analysis/llava_v1_5_mix1k.jsonl); put it at\n  ./playground/data/analysis/ or set "
             "DATA_FILE, with its images (coco, gqa, ocr_vqa, textvqa, vg) under IMAGE_FOLDER\n")
    assert missing.returncode == 2 and missing.stderr == where
    copy = tmp_path / "reference" / "analysis" / "llava_v1_5_mix1k.jsonl"
    copy.parent.mkdir(parents=True)
    copy.write_text("")
    env["FASTERVLM_REFERENCE"] = str(tmp_path / "reference")
    found = subprocess.run(["bash", str(REPO / "scripts" / script)], env=env, cwd=tmp_path,
                           capture_output=True, text=True)
    assert found.returncode == 2 and found.stderr == where + f"  A copy is in the reference data: DATA_FILE={copy}\n"


def test_missing_data_file_says_where_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FASTERVLM_REFERENCE", str(tmp_path / "no-reference"))
    with pytest.raises(SystemExit):
        attn_shift.main(["--model-path", "ck", "--data-file", str(tmp_path / "d.jsonl")])
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.split(": error: ", 1)[1] == (f"--data-file {tmp_path / 'd.jsonl'} not found. The 1K analysis subset "
                   f"llava_v1_5_mix1k.jsonl (1,000 LLaVA-1.5 instruction records) is in FasterVLM's repository "
                   f"(github.com/Theia-4869/FasterVLM, playground/data/analysis/llava_v1_5_mix1k.jsonl); put it at "
                   f"playground/data/analysis/llava_v1_5_mix1k.jsonl or pass --data-file, with its images (coco, gqa, "
                   f"ocr_vqa, textvqa, vg) under --image-folder")
    copy = tmp_path / "reference" / "analysis" / "llava_v1_5_mix1k.jsonl"
    copy.parent.mkdir(parents=True)
    copy.write_text("")
    monkeypatch.setenv("FASTERVLM_REFERENCE", str(tmp_path / "reference"))
    with pytest.raises(SystemExit):
        attn_shift.main(["--model-path", "ck", "--data-file", str(tmp_path / "d.jsonl")])
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        f"under --image-folder. A copy is in the reference data: --data-file {copy}")
