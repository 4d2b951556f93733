"""The sharing bench on the tiny model: shaped question files, both paths timed, answers equal in fp32."""

from __future__ import annotations

import json

import torch

from llava.bench.sharing import SHAPES, TIE, compare, images_for, main, shaped_items


def test_shaped_items_follow_the_benchmarks():
    items = shaped_items("pope", 3)
    assert len(items) == 3 * SHAPES["pope"] == 54
    assert [it.images[0] for it in items[:19]] == ["im0.png"] * 18 + ["im1.png"]
    assert len({it.key for it in items}) == 54
    assert [images_for(s, 8) for s in ("gqa", "pope", "mme", "single")] == [1, 1, 4, 8]


def test_compare_finds_the_first_differing_token_and_its_gap():
    logits = torch.tensor([[5.0, 1.0, 0.0], [2.0, 2.0 - 2.0**-10, 0.0]])  # step 1: a near tie
    plain = {("a", "p"): (torch.tensor([0, 0]), logits), ("b", "p"): (torch.tensor([0, 1]), logits)}
    shared = {("a", "p"): (torch.tensor([0, 1]), None), ("b", "p"): (torch.tensor([0, 1]), None)}
    compared, diff = compare(plain, shared, eos=None)
    assert compared == 2 and len(diff) == 1
    d = diff[0]
    assert d["question"] == "a" and d["step"] == 1 and d["top2_gap"] == 2.0**-10
    assert d["top2_gap_relative"] == 2.0**-11 < TIE and d["at_tie"] and d["chosen_gap"] == 2.0**-10


def test_bench_reports_both_paths(tmp_path):
    result = main(["--arch", "tiny", "--dtype", "float32", "--shapes", "mme,single", "--min-questions", "2",
                   "--plain-questions", "0", "--visual-token-num", "all,64", "--plain-batch-sizes", "1,2",
                   "--batch-size", "2", "--out", str(tmp_path)])
    rows = result["rows"]
    assert [(r["shape"], r["k"]) for r in rows] == [("mme", None), ("mme", 64), ("single", None), ("single", 64)]
    for r in rows:
        assert r["agreement"] == 1.0 and r["differing"] == 0  # fp32: the shared path answers as the plain path does
        assert r["compared"] == r["questions"] == 2 and r["plain_batch"] in (1, 2)
        assert r["plain_qps"] > 0 and r["shared_qps"] > 0
        assert abs(r["speedup"] - r["shared_qps"] / r["plain_qps"]) < 1e-9
    assert [r["predicted"] for r in rows if r["shape"] == "single"] == [1.0, 1.0]  # one question: the plain path
    for stages in result["stages"].values():
        assert all(v > 0 for path in stages.values() for v in path.values())
    assert json.loads((tmp_path / "sharing.json").read_text())["rows"] == rows
    assert (tmp_path / "sharing.png").stat().st_size > 0 and "| mme | 2 |" in (tmp_path / "sharing.md").read_text()
    assert result["peak_rss_mb"] >= result["rss_after_load_mb"] > 0 and result["vision_cache_size"] == 64
