"""summarize --video: FasterVLM's video table from video-QA records (synthetic records with known values),
checked against FasterVLM's own rows; video records stay out of the image table."""

from __future__ import annotations

import json

import pytest

from llava.eval import summarize
from llava.eval.catalogue import video_qa
from llava.eval.summarize_video import build_video_table

COLUMNS = ("TGIF-QA", "MSVD-QA", "MSRVTT-QA", "ActivityNet-QA")


def record(column, k, method, acc, score, tokens):
    return {"benchmark": column, "k": k, "metrics": {"accuracy": acc, "score": score, "judged": 1000, "failed": 0},
            "headline": acc, "method": method, "visual_tokens": tokens}


def paper_records():
    """FasterVLM's published rows as our records: its unpruned row (2048 tokens) becomes our K=256 run."""
    out = []
    for method, tokens, cells in video_qa.FASTERVLM_VIDEO_TABLE:
        name = {"Video-LLaVA": "fastervlm", "FastV": "fastv", "FasterVLM": "fastervlm"}[method]
        for column, (acc, score) in cells.items():
            out.append(record(column, tokens // 8, name, acc, score, tokens))
    return out


def write(tmp_path, records):
    for n, rec in enumerate(records):
        path = tmp_path / f"{rec['method']}-{rec['k']}" / f"{n}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec))
    return tmp_path


def test_fastervlm_rows_reproduce_its_averages(tmp_path, capsys):
    table = summarize.main([str(write(tmp_path, paper_records())), "--video", "--out", str(tmp_path / "t")])
    assert table.baseline == ("fastervlm", 256)  # no unpruned run: the all-patches run is the baseline
    assert "baseline is fastervlm at K=256 (all patches kept)" in capsys.readouterr().out
    assert table.runs[:3] == [("fastervlm", 256), ("fastervlm", 192), ("fastv", 192)]
    assert table.columns == list(COLUMNS)
    for (method, tokens), (acc, score) in video_qa.FASTERVLM_VIDEO_AVERAGES.items():
        run = ({"Video-LLaVA": "fastervlm", "FastV": "fastv", "FasterVLM": "fastervlm"}[method], tokens // 8)
        assert table.avg[run][0] == pytest.approx(acc, abs=0.006)
        assert table.avg[run][1] == pytest.approx(score, abs=0.1)  # the table's scores are rounded to 0.01
    markdown = (tmp_path / "t.md").read_text()
    assert "| fastv | 13 | 95% | 104 | 10.60 | 2.29 | 64.10 | 3.78 | 52.40 | 3.39 | 40.30 | 3.78 | 82.00% |" in markdown
    assert (tmp_path / "t.csv").read_text().splitlines()[0].startswith("method,K,tokens,TGIF-QA acc,TGIF-QA score,")


def test_an_unpruned_run_is_the_baseline_and_duplicates_are_refused(tmp_path):
    recs = [record("MSVD-QA", None, "fastervlm", 70.0, 4.0, 2056), record("MSVD-QA", None, "fastv", 69.0, 3.9, 2056),
            record("MSVD-QA", 256, "fastervlm", 63.0, 3.6, 2048), record("MSVD-QA", 13, "fastv", 35.0, 2.0, 104)]
    table = build_video_table([(tmp_path / f"{n}.json", r) for n, r in enumerate(recs)])
    assert table.runs == [("unpruned", None), ("fastervlm", 256), ("fastv", 13)]
    assert table.cells[(("unpruned", None), "MSVD-QA")] == (70.0, 4.0)  # the first unpruned record counts
    assert table.relative[(("fastv", 13), "MSVD-QA")] == pytest.approx((50.0, 50.0))
    assert table.avg[("fastervlm", 256)] == pytest.approx((90.0, 90.0))
    with pytest.raises(ValueError, match=r"MSVD-QA of fastv at K=13 is in both"):
        build_video_table([(tmp_path / "a.json", recs[3]), (tmp_path / "b.json", recs[3])])


def test_video_records_stay_out_of_the_image_table(tmp_path):
    write(tmp_path, [record("MSVD-QA", 13, "fastervlm", 60.0, 3.5, 104)])
    with pytest.raises(ValueError, match=r"only video-QA score records .*add --video"):
        summarize.main([str(tmp_path)])
    (tmp_path / "pope.json").write_text(json.dumps({"benchmark": "POPE", "k": None, "metrics": {}, "headline": 85.9}))
    table = summarize.main([str(tmp_path)])
    assert table.benchmarks == ["POPE"]
    with pytest.raises(ValueError, match="video tables know 'Video-LLaVA-7B' and 'FasterVLM'"):
        summarize.main([str(tmp_path), "--video", "--published", "LLaVA-1.5-7B"])
