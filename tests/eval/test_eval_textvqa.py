"""TextVQA: prompt -> question matching and VQA accuracy on constructed annotations."""

import json

import pytest

from llava.eval import eval_textvqa
from llava.eval.eval_textvqa import evaluate_textvqa, question_from_prompt
from llava.eval.io_utils import load_answers, read_jsonl, write_jsonl

SUFFIX = "\nAnswer the question using a single word or phrase."


@pytest.mark.parametrize(
    "prompt, question",
    [
        ("What is the brand?\nReference OCR token: DAKOTA, DIGITAL" + SUFFIX, "what is the brand?"),
        ("Reference OCR token: A, B\nWhat does it say?" + SUFFIX, "what does it say?"),
        ("What Year?" + SUFFIX, "what year?"),
        ("OCR tokens: a b Question: Who made it? Short answer:", "who made it?"),
    ],
)
def test_question_from_prompt(prompt, question):
    assert question_from_prompt(prompt) == question


def _annotation(tmp_path, data):
    path = tmp_path / "TextVQA_0.5.1_val.json"
    path.write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    return path


def test_constructed_scores(tmp_path, capsys):
    ann = _annotation(tmp_path, [
        {"image_id": "img1", "question": "What brand?", "answers": ["Dakota"] * 3 + ["kodak"] * 7},
        {"image_id": "img1", "question": "What color?", "answers": ["red"] * 10},
        {"image_id": "img2", "question": "How many?", "answers": ["2"] * 2 + ["3"] * 8},
    ])
    res = tmp_path / "ans.jsonl"
    write_jsonl(res, [
        {"question_id": "img1", "prompt": "What brand?\nReference OCR token: DAKOTA" + SUFFIX, "text": "dakota."},
        {"question_id": "img1", "prompt": "What color?" + SUFFIX, "text": "Blue"},
        {"question_id": "img2", "prompt": "How many?" + SUFFIX, "text": "two"},
    ])
    out = eval_textvqa.main(["--annotation-file", str(ann), "--result-file", str(res)])
    assert out["samples"] == 3
    assert out["accuracy"] == pytest.approx(100 * (0.9 + 0.0 + 0.6) / 3)
    assert "Accuracy: 50.00%" in capsys.readouterr().out


def test_unknown_question_is_an_error(tmp_path):
    ann = _annotation(tmp_path, [{"image_id": "img1", "question": "What brand?", "answers": ["a"] * 10}])
    write_jsonl(tmp_path / "ans.jsonl", [{"question_id": "img1", "prompt": "What model?" + SUFFIX, "text": "x"}])
    with pytest.raises(ValueError) as err:
        evaluate_textvqa(ann, tmp_path / "ans.jsonl")
    assert str(err.value) == (
        f"{tmp_path / 'ans.jsonl'}: 1 of 1 questions in {ann} have no prediction (first: 'img1: what brand?'); "
        f"1 predictions match no question in {ann} (first: 'img1: what model?'); no score over an incomplete "
        "set: answer every question, or pass --allow-incomplete to score what is there")


def test_reference_prompts_match_constructed_annotations(ref13b, tmp_path):
    """All 5,000 published prompts parse and match annotations keyed by (image id, question)."""
    d = ref13b / "textvqa"
    answers = load_answers(d / "answers.jsonl")
    data = []
    for i, q in enumerate(read_jsonl(d / "llava_textvqa_val_v051_ocr.jsonl")):
        question = q["text"].split("\n")[0]
        gts = [answers[i]["text"]] * 3 + ["zzzz"] * 7 if i % 2 == 0 else ["zzzz"] * 10
        data.append({"image_id": q["question_id"], "question": question.upper(), "answers": gts})
    result = evaluate_textvqa(_annotation(tmp_path, data), d / "answers.jsonl")
    assert result["samples"] == 5000
    assert result["accuracy"] == pytest.approx(100 * 0.9 * 2500 / 5000)
