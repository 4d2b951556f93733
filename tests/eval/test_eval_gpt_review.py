"""LLaVA-Bench: relative scores of the published GPT-4 reviews."""

import json

import pytest

from llava.eval import summarize_gpt_review
from llava.eval.summarize_gpt_review import summarize_reviews


def test_reference_reviews(ref13b, tmp_path, capsys):
    d = ref13b / "llava-bench-in-the-wild" / "reviews"
    files = [str(d / f"llava-v1.5-13b-eval{i}.jsonl") for i in (1, 2, 3)]
    res = summarize_gpt_review.main(["-f", *files, "--save-json", str(tmp_path / "s.json")])
    assert [res[f]["groups"]["all"]["relative"] for f in files] == [72.8, 72.7, 72.1]
    eval1 = res[files[0]]["groups"]
    assert {k: v["relative"] for k, v in eval1.items()} == {"all": 72.8, "complex": 82.8, "conv": 74.7, "detail": 52.6}
    assert (eval1["all"]["gpt4"], eval1["all"]["model"]) == (8.65, 6.3)
    assert (eval1["complex"]["count"], eval1["conv"]["count"], eval1["detail"]["count"]) == (28, 17, 15)
    assert all(r["failed"] == 0 for r in res.values())
    out = capsys.readouterr().out
    assert "72.8  (GPT-4 86.5, model 63.0, n=60)" in out
    assert json.loads((tmp_path / "s.json").read_text())["headline"] == pytest.approx((72.8 + 72.7 + 72.1) / 3)


def test_directory_option(ref13b, capsys):
    res = summarize_gpt_review.main(["-d", str(ref13b / "llava-bench-in-the-wild" / "reviews")])
    assert len(res) == 3


def test_failed_parses_are_left_out():
    reviews = [{"category": "llava_bench_conv", "tuple": [8, 6]}, {"category": "llava_bench_conv", "tuple": [-1, -1]},
               {"tuple": [10, 5]}]
    res = summarize_reviews(reviews)
    assert res["failed"] == 1
    assert res["groups"]["all"] == {"gpt4": 9.0, "model": 5.5, "relative": 61.1, "count": 2}
    assert res["groups"]["conv"]["relative"] == 75.0
    with pytest.raises(ValueError, match="review 1 has no 'tuple'"):
        summarize_reviews([{"content": "x"}])
