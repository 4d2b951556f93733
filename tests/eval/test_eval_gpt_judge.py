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
