"""GQA: prediction conversion and testdev-balanced accuracy."""

import pytest

from llava.eval import eval_gqa
from llava.eval.eval_gqa import normalize_prediction, score_gqa, to_predictions
from llava.eval.io_utils import load_answers, read_json, write_json, write_jsonl


@pytest.mark.parametrize("text, expected", [("Yes", "yes"), ("Table.", "table"), (" Left. \n", "left"), ("U.S.A..", "u.s.a")])
def test_normalize_prediction(text, expected):
    assert normalize_prediction(text) == expected


def test_small_case(tmp_path, capsys):
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": "1", "text": "Yes"}, {"question_id": "2", "text": "Cat."},
                                       {"question_id": "3", "text": "dog"}])
    questions = {"1": {"answer": "yes"}, "2": {"answer": "dog"}, "3": {"answer": "dog"},
                 "4": {"answer": "x", "isBalanced": False}}
    write_json(tmp_path / "q.json", questions)
    out = eval_gqa.main(["--result-file", str(tmp_path / "a.jsonl"), "--questions", str(tmp_path / "q.json"),
                         "--prediction-file", str(tmp_path / "pred.json")])
    assert (out["correct"], out["questions"]) == (2, 3)
    assert "GQA accuracy: 66.67% (2/3)" in capsys.readouterr().out
    assert read_json(tmp_path / "pred.json")[1] == {"questionId": "2", "prediction": "cat"}
    with pytest.raises(ValueError, match="1 of 4 questions"):
        score_gqa(to_predictions(load_answers(tmp_path / "a.jsonl")), {**questions, "5": {"answer": "y"}})


def test_reference_answers_convert(ref13b):
    d = ref13b / "gqa"
    preds = to_predictions(load_answers(d / "answers.jsonl"))
    assert len(preds) == 12578
    assert preds[0] == {"questionId": "201307251", "prediction": "no"}
    assert all(p["prediction"] == p["prediction"].lower() and not p["prediction"].endswith(".") for p in preds)
    questions = {p["questionId"]: {"answer": p["prediction"] if i % 4 else "zzz"} for i, p in enumerate(preds)}
    res = score_gqa(preds, questions)
    assert res["correct"] == 12578 - len(range(0, 12578, 4))
