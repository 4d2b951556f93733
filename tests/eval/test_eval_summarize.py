"""Paper table from score records: ordering, relative scores, Avg, missing baselines and outputs."""

import csv
import json

import pytest

from llava.eval import eval_pope, summarize
from llava.eval.score_json import score_record
from llava.eval.summarize import build_table, canonical_name, find_records


def _save(root, bench, k, headline):
    path = root / bench / f"k{k}" / "score.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(score_record(bench, {"x": headline}, headline, k)))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    for k, pope, mme, gqa in [(576, 85.0, 1500.0, 60.0), (144, 85.0, 1350.0, 54.0), (64, 68.0, 1200.0, None)]:
        _save(root, "POPE", k, pope)
        _save(root, "MME", k, mme)
        if gqa is not None:
            _save(root, "GQA", k, gqa)
    _save(root, "MyBench", 64, 10.0)  # unknown benchmark, no baseline
    (root / "junk.json").write_text("[1, 2]")  # ignored: not a score record
    (root / "broken.json").write_text("{")  # ignored
    return root


def test_table(results):
    table = build_table(find_records(results), 576)
    assert table.ks == [576, 144, 64]
    assert table.benchmarks == ["GQA", "POPE", "MME", "MyBench"]
    assert table.relative[(144, "MME")] == pytest.approx(90.0)
    assert table.avg[576] == pytest.approx(100.0)
    assert table.avg[144] == pytest.approx((90.0 + 100.0 + 90.0) / 3)
    assert table.avg[64] == pytest.approx((80.0 + 80.0) / 2)  # GQA absent, MyBench has no baseline
    assert table.no_baseline == ["MyBench"]


def test_cli_outputs(results, tmp_path, capsys):
    prefix = tmp_path / "out" / "table"
    summarize.main([str(results), "--baseline-k", "576", "--out", str(prefix)])
    out = capsys.readouterr().out
    assert "warning: no baseline (K=576) score for MyBench" in out
    assert "| K | GQA | POPE | MME | MyBench | Avg |" in out
    assert "| 576 (baseline) | 60.00 (100.0%) | 85.00 (100.0%) | 1500.00 (100.0%) | - | 100.0% |" in out
    assert "| 64 | - | 68.00 (80.0%) | 1200.00 (80.0%) | 10.00 | 80.0% |" in out
    assert (tmp_path / "out" / "table.md").read_text().strip() == out[out.index("| K"):out.index("\nwrote")].strip()
    rows = list(csv.reader((tmp_path / "out" / "table.csv").open()))
    assert rows[0] == ["K", "GQA", "GQA %", "POPE", "POPE %", "MME", "MME %", "MyBench", "MyBench %", "Avg %"]
    assert rows[2][0] == "144" and float(rows[2][5]) == pytest.approx(1350.0) and float(rows[2][-1]) == pytest.approx(93.3333, abs=1e-3)
    png = (tmp_path / "out" / "table.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_published_rows_from_the_catalogue(results, capsys):
    summarize.main([str(results), "--published", "LLaVA-1.5-7B", "--published", "LLaVA-1.5-13B"])
    out = capsys.readouterr().out
    assert "| LLaVA-1.5-7B (published) | 62.00 | 85.90 | 1510.70 | - | - |" in out
    assert "| LLaVA-1.5-13B (published) | 63.30 | 85.90 | 1531.30 | - | - |" in out
    with pytest.raises(SystemExit, match=r"--published LLaVA-2: no published numbers .*'LLaVA-1.5-13B', 'LLaVA-1.5-7B'"):
        summarize.main([str(results), "--published", "LLaVA-2"])


def test_duplicates_and_null_k(tmp_path):
    root = tmp_path / "r"
    (root / "a").mkdir(parents=True)
    (root / "a" / "s.json").write_text(json.dumps(score_record("pope", {}, 80.0, None)))
    table = build_table(find_records(root), 576)
    assert table.ks == [576] and table.benchmarks == ["POPE"]
    (root / "b.json").write_text(json.dumps(score_record("POPE", {}, 81.0, 576)))
    with pytest.raises(ValueError, match="POPE at K=576 is in both"):
        build_table(find_records(root), 576)


def test_aliases():
    assert canonical_name("mmbench") == "MMB" and canonical_name("sqa") == "SQA-IMG"
    assert canonical_name("llava-bench") == "LLaVA-Bench" and canonical_name("Other") == "Other"


def test_end_to_end_with_a_scorer(ref13b, tmp_path, capsys):
    d = ref13b / "pope"
    for k in (576, 64):
        eval_pope.main(["--annotation-dir", str(d / "labels"), "--question-file", str(d / "llava_pope_test.jsonl"),
                        "--result-file", str(d / "answers.jsonl"), "--k", str(k),
                        "--save-json", str(tmp_path / "res" / "pope" / f"k{k}" / "score.json")])
    capsys.readouterr()
    table = summarize.main([str(tmp_path / "res")])
    assert table.scores[(576, "POPE")] == pytest.approx(85.9469, abs=1e-4)
    assert "| 64 | 85.95 (100.0%) | 100.0% |" in capsys.readouterr().out
