"""The optional GPT judge: parsing, key handling, and that nothing imports it implicitly (no network)."""

import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import gpt_judge


@pytest.mark.parametrize("text, score", [("0.6", 0.6), ("Score: 1.0", 1.0), ("<AND> 0", 0.0), ("1.5", None), ("n/a", None)])
def test_parse_mmvet_score(text, score):
    assert gpt_judge.parse_mmvet_score(text) == score


@pytest.mark.parametrize("text, pair", [("8 6.5\nBecause...", [8.0, 6.5]), ("9, 7", [9.0, 7.0]), ("Scores: 9", [-1.0, -1.0])])
def test_parse_review_scores(text, pair):
    assert gpt_judge.parse_review_scores(text) == pair


def test_missing_key_fails_before_any_request(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY is not set"):
        gpt_judge.main(["mmvet", "--mmvet-json", "x.json", "--results", "r.json", "--out", "o.json"])


def test_scorers_do_not_import_the_judge():
    code = ("import sys, importlib\n"
            "for m in ['eval_pope','eval_mme','eval_science_qa','eval_textvqa','eval_vqa','eval_gqa','eval_seed',"
            "'eval_mmbench','eval_mmvet_summary','convert_mmvet_for_eval','summarize_gpt_review','summarize',"
            "'eval_video_qa','summarize_video']:\n"
            "    importlib.import_module('llava.eval.' + m)\n"
            "print('llava.eval.gpt_judge' in sys.modules, 'pandas' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["False", "False", "False"]


def test_grade_mmvet_through_the_shared_client(tmp_path, monkeypatch):
    """gpt_judge's requests go through llava.eval.judge_client to OPENAI_BASE_URL (a local fake judge)."""
    from judge_server import FakeJudge

    monkeypatch.setenv("OPENAI_API_KEY", "sk-mmvet-test")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1")
    replies = iter(["n/a", "0.7", "1.0"])
    with FakeJudge(lambda body, n: next(replies)) as judge:
        monkeypatch.setenv("OPENAI_BASE_URL", judge.url)
        grades = gpt_judge.grade_mmvet({"v1_0": {"question": "q0", "answer": "a0"}, "v1_1": {"question": "q1", "answer": "a1"}},
                                       {"v1_0": "p0", "v1_1": "p1"}, tmp_path / "g.json", "gpt-4-0613", 1,
                                       gpt_judge.MMVET_INSTRUCTION)
    assert grades["v1_0"]["score"] == [0.7] and grades["v1_0"]["content"] == ["0.7"]  # "n/a" asked again
    assert grades["v1_1"]["score"] == [1.0]
    assert [r["body"]["model"] for r in judge.requests] == ["gpt-4-0613"] * 3
    assert judge.requests[0]["headers"]["Authorization"] == "Bearer sk-mmvet-test"
    assert "Prediction: p0" in judge.requests[0]["body"]["messages"][0]["content"]
