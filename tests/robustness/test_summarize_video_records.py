"""`summarize --video` over video-QA score records with a field of the wrong kind. Before: a null headline
or a list for metrics was a traceback, a text headline or K "could not convert string to float" naming
no file, and K = 3.5, -4 or true was put in the table as K = 3, -4 or 1. Now each names the record file
and the field."""

from __future__ import annotations

import json

import pytest

from llava.eval import summarize

GOOD = {"benchmark": "MSVD-QA", "k": 13, "metrics": {"accuracy": 70.0, "score": 3.9}, "headline": 70.0,
        "method": "fastervlm", "visual_tokens": 104}


@pytest.mark.parametrize("field, value, expected", [
    ("headline", None, r"headline is None, not a number"),
    ("headline", "abc", r"headline is 'abc', not a number"),
    ("headline", float("nan"), r"headline is nan, not a number"),
    ("metrics", [1], r"a video-QA record without metrics\.score"),
    ("metrics", {"score": "x"}, r"metrics\.score is 'x', not a number"),
    ("visual_tokens", "abc", r"visual_tokens is 'abc', not a number"),
    ("k", "abc", r"k is 'abc'; a video-QA record holds K per frame \(an integer >= 1\) or null"),
    ("k", 3.5, r"k is 3\.5; a video-QA record holds K per frame"),
    ("k", -4, r"k is -4; a video-QA record holds K per frame"),
    ("k", True, r"k is True; a video-QA record holds K per frame"),
])
def test_a_record_field_of_the_wrong_kind_names_the_record(tmp_path, field, value, expected):
    (tmp_path / "msrvtt.json").write_text(json.dumps({**GOOD, "benchmark": "MSRVTT-QA"}))
    (tmp_path / "msvd.json").write_text(json.dumps({**GOOD, field: value}))
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'msvd.json'}: {expected}"):
        summarize.main([str(tmp_path), "--video"])


def test_good_records_still_make_the_table(tmp_path):
    (tmp_path / "msvd.json").write_text(json.dumps(GOOD))
    (tmp_path / "full.json").write_text(json.dumps({**GOOD, "k": None, "headline": 80.0, "visual_tokens": 2056}))
    table = summarize.main([str(tmp_path), "--video"])
    assert table.cells[(("fastervlm", 13), "MSVD-QA")] == (70.0, 3.9)
    assert table.relative[(("fastervlm", 13), "MSVD-QA")][0] == pytest.approx(87.5)
