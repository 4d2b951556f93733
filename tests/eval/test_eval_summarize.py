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


# ---- --align layer-averaged: methods side by side at equal layer-averaged visual tokens ------------
def _run_record(root, method, bench, k, headline, layer_avg):
    path = root / method / bench / f"k{k}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    run = {"method": method, "method_args": {}, "visual_tokens": 576 if method in ("fastv", "pdrop") else k,
           "layer_averaged_visual_tokens": layer_avg}
    path.write_text(json.dumps(score_record(bench, {}, headline, k, run)))


@pytest.fixture
def methods_results(tmp_path):
    root = tmp_path / "runs"
    _run_record(root, "fastervlm", "POPE", 576, 86.0, 576.0)
    _run_record(root, "fastv", "POPE", 576, 86.0, 576.0)  # also unpruned: the same baseline, counted once
    _run_record(root, "fastervlm", "POPE", 144, 86.0 * 0.95, 144.0)
    _run_record(root, "fastervlm", "POPE", 64, 86.0 * 0.90, 64.0)
    _run_record(root, "fastv", "POPE", 64, 86.0 * 0.80, (2 * 576 + 30 * 64) / 32)  # 96.0
    _run_record(root, "pdrop", "POPE", 576, 86.0 * 0.97, 144.0 * 1.02)  # within 5% of fastervlm K=144
    _run_record(root, "fastervlm", "MME", 576, 1500.0, 576.0)
    _run_record(root, "fastervlm", "MME", 64, 1200.0, 64.0)
    return root


def test_aligned_table_orders_runs_by_layer_averaged_tokens(methods_results):
    table = summarize.build_aligned(find_records(methods_results), 576, 0.05)
    assert table.baseline == ("unpruned", 576)
    assert table.runs == [("unpruned", 576), ("pdrop", 576), ("fastervlm", 144), ("fastv", 64), ("fastervlm", 64)]
    assert table.layer_avg[("fastv", 64)] == pytest.approx(96.0)
    assert table.groups[("pdrop", 576)] == table.groups[("fastervlm", 144)] == pytest.approx(146.88)
    assert table.groups[("fastv", 64)] == 96.0 and table.groups[("fastervlm", 64)] == 64.0
    assert table.relative[(("fastv", 64), "POPE")] == pytest.approx(80.0)
    assert table.avg[("fastervlm", 64)] == pytest.approx((90.0 + 80.0) / 2)
    assert table.benchmarks == ["POPE", "MME"]
    # the K table refuses records of several methods and points to this mode
    with pytest.raises(ValueError, match="--align layer-averaged"):
        build_table(find_records(methods_results), 576)


def test_aligned_cli_outputs(methods_results, tmp_path, capsys):
    prefix = tmp_path / "out" / "aligned"
    summarize.main([str(methods_results), "--align", "layer-averaged", "--out", str(prefix)])
    out = capsys.readouterr().out
    assert "| ≈ layer-avg tokens | method | K | layer-avg tokens | POPE | MME | Avg |" in out
    assert "| 576 | unpruned (baseline) | 576 | 576.0 | 86.00 (100.0%) | 1500.00 (100.0%) | 100.0% |" in out
    assert "| 147 | pdrop | 576 | 146.9 | 83.42 (97.0%) | - | 97.0% |" in out
    assert "| 96 | fastv | 64 | 96.0 | 68.80 (80.0%) | - | 80.0% |" in out
    rows = list(csv.reader((tmp_path / "out" / "aligned.csv").open()))
    assert rows[0][:4] == ["group", "method", "K", "layer-averaged tokens"] and rows[2][1] == "pdrop"
    assert (tmp_path / "out" / "aligned.png").read_bytes()[:4] == b"\x89PNG"


def test_scorer_records_the_runs_method_and_layer_averaged_tokens(tmp_path):
    from llava.eval.score_json import run_accounting

    answers = tmp_path / "a.jsonl"
    meta = {"pruning_method": "fastv", "pruning_args": {"layer": 2}, "visual_token_num": 64}
    rows = [{"question_id": 1, "metadata": {**meta, "visual_tokens": 576, "layer_averaged_visual_tokens": 96.0}},
            {"question_id": 2, "metadata": {**meta, "visual_tokens": [576, 576],
                                            "layer_averaged_visual_tokens": [96.0, 100.0]}},
            {"question_id": 3, "metadata": {**meta, "visual_tokens": [], "layer_averaged_visual_tokens": []}}]
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert run_accounting(answers) == {"method": "fastv", "method_args": {"layer": 2}, "visual_tokens": 576.0,
                                       "layer_averaged_visual_tokens": pytest.approx((96 + 96 + 100) / 3)}
    old = tmp_path / "old.jsonl"  # answers from before the layer-averaged field: a pre-LLM method's K
    old.write_text(json.dumps({"metadata": {"pruning_method": "fastervlm", "visual_tokens": 64}}) + "\n")
    assert run_accounting(old)["layer_averaged_visual_tokens"] == 64.0
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"metadata": {"pruning_method": "dart"}}) + "\n")
    with pytest.raises(ValueError, match="answers of several methods"):
        run_accounting(mixed)
    assert run_accounting(tmp_path / "none.json") is None


def test_save_from_args_adds_the_run_to_the_record(tmp_path):
    from argparse import Namespace

    from llava.eval.score_json import save_from_args

    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"question_id": 1, "metadata": {
        "pruning_method": "pdrop", "pruning_args": {"layers": [8, 16, 24]}, "visual_tokens": 576,
        "layer_averaged_visual_tokens": 252.0}}) + "\n")
    out = tmp_path / "rec" / "pope.json"
    args = Namespace(save_json=str(out), benchmark_name="POPE", k=576, result_file=str(answers))
    save_from_args(args, {"f1": 80.0}, 80.0)
    assert json.loads(out.read_text()) == {"benchmark": "POPE", "k": 576, "metrics": {"f1": 80.0}, "headline": 80.0,
                                           "method": "pdrop", "method_args": {"layers": [8, 16, 24]},
                                           "visual_tokens": 576.0, "layer_averaged_visual_tokens": 252.0}
    grades = Namespace(save_json=str(out), benchmark_name="MM-Vet", k=64, grade_file="g.json", run_answers=None)
    save_from_args(grades, {}, 30.0)  # a grade file carries no metadata: the record stays as before
    assert "method" not in json.loads(out.read_text())
    with pytest.raises(FileNotFoundError, match="--run-answers"):
        save_from_args(Namespace(**{**vars(grades), "run_answers": str(tmp_path / "missing.jsonl")}), {}, 30.0)
    save_from_args(Namespace(**{**vars(grades), "run_answers": str(answers)}), {}, 30.0)
    assert json.loads(out.read_text())["layer_averaged_visual_tokens"] == 252.0
