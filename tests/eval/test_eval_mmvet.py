"""MM-Vet: totals of the published grade files, the answers converter and per-capability means."""

import json

import pytest

from llava.eval import convert_mmvet_for_eval, eval_mmvet_summary
from llava.eval.eval_mmvet_summary import summarize_grades


def test_reference_3_runs(ref13b, capsys):
    res = eval_mmvet_summary.main(["--grade-file", str(ref13b / "mm-vet/results/llava-v1.5-13b_gpt-4-grade-3runs.json")])
    assert [round(r, 1) for r in res["runs"]] == [36.1, 36.5, 36.3]
    assert res["runs"][0] == pytest.approx(36.1009, abs=1e-4)
    assert round(res["total"], 1) == 36.3 and round(res["std"], 1) == 0.2 and res["samples"] == 218
    assert "runs: [36.1, 36.5, 36.3]" in capsys.readouterr().out


def test_reference_1_run(ref13b, tmp_path):
    res = eval_mmvet_summary.main(["--grade-file", str(ref13b / "mm-vet/results/llava-v1.5-13b_gpt-4-grade-1runs.json"),
                                   "--save-json", str(tmp_path / "s.json")])
    assert res["total"] == pytest.approx(36.1468, abs=1e-4) and res["std"] == 0.0
    rec = json.loads((tmp_path / "s.json").read_text())
    assert rec["benchmark"] == "MM-Vet" and round(rec["headline"], 1) == 36.1


def test_capabilities_and_uneven_runs(tmp_path):
    grades = {"v1_0": {"score": [1.0, 0.5]}, "v1_1": {"score": [0.0, 0.5]}}
    caps = {"v1_0": ["rec", "ocr"], "v1_1": ["rec"]}
    res = summarize_grades(grades, caps)
    assert res["runs"] == [50.0, 50.0] and res["capabilities"] == {"ocr": 75.0, "rec": 50.0}
    with pytest.raises(ValueError, match="sample v1_1: 1 graded runs"):
        summarize_grades({"v1_0": {"score": [1.0, 0.5]}, "v1_1": {"score": [0.0]}})


def test_converter_reproduces_published_results(ref13b, tmp_path, capsys):
    d = ref13b / "mm-vet"
    convert_mmvet_for_eval.main(["--src", str(d / "answers.jsonl"), "--dst", str(tmp_path / "r.json")])
    assert "wrote 218 MM-Vet answers" in capsys.readouterr().out
    assert (tmp_path / "r.json").read_bytes() == (d / "results" / "llava-v1.5-13b.json").read_bytes()
