"""The sharing bench on the tiny model: shaped question files, both paths timed, answers equal in fp32."""

from __future__ import annotations

import json

from llava.bench.sharing import SHAPES, main, shaped_items


def test_shaped_items_follow_the_benchmarks():
    items = shaped_items("pope", 3)
    assert len(items) == 3 * SHAPES["pope"] == 54
    assert [it.images[0] for it in items[:19]] == ["im0.png"] * 18 + ["im1.png"]
    assert len({it.key for it in items}) == 54


def test_bench_reports_both_paths(tmp_path):
    result = main(["--shapes", "mme,single", "--images", "2", "--visual-token-num", "all,64",
                   "--plain-batch-sizes", "1,2", "--batch-size", "2", "--repeats", "1", "--out", str(tmp_path)])
    rows = result["rows"]
    assert [(r["shape"], r["k"]) for r in rows] == [("mme", None), ("mme", 64), ("single", None), ("single", 64)]
    for r in rows:
        assert r["agreement"] == 1.0  # fp32: the shared path answers as the plain path does
        assert r["plain_qps"] > 0 and r["shared_qps"] > 0 and r["plain_batch"] in (1, 2)
        assert abs(r["speedup"] - r["shared_qps"] / r["plain_qps"]) < 1e-9
    assert json.loads((tmp_path / "sharing.json").read_text())["rows"] == rows
    assert result["peak_rss_mb"] >= result["rss_after_load_mb"] > 0
