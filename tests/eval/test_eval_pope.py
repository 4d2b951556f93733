"""POPE scorer: LLaVA's yes/no parse, confusion counts and the published 13B F1 values."""

import json

import pytest

from llava.eval import eval_pope
from llava.eval.eval_pope import confusion, evaluate_pope, parse_yes_no
from llava.eval.io_utils import write_jsonl


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("no", "no"),
        ("NO", "yes"),  # only No/no/not count
        ("There is not a dog.", "no"),
        ("Yes. There is no dog.", "yes"),  # only the first sentence counts
        ("No, there is a dog", "no"),  # the comma is removed before splitting
        ("Nope", "yes"),
        ("I do not know", "no"),
        ("nothing", "yes"),
        ("", "yes"),
    ],
)
def test_parse_yes_no(text, expected):
    assert parse_yes_no(text) == expected


def test_confusion_counts_and_zero_division():
    s = confusion(["yes", "yes", "no", "no"], ["yes", "no", "no", "yes"])
    assert (s.tp, s.fp, s.tn, s.fn) == (1, 1, 1, 1)
    assert s.f1 == pytest.approx(0.5) and s.yes_ratio == 0.5
    none_yes = confusion(["no", "no"], ["yes", "no"])
    assert none_yes.precision == 0.0 and none_yes.f1 == 0.0


REFERENCE = {
    "adversarial": ((1182, 117, 1383, 318), 84.459),
    "popular": ((1182, 59, 1441, 318), 86.246),
    "random": ((1182, 31, 1379, 318), 87.136),
}


def test_reference_13b(ref13b):
    d = ref13b / "pope"
    result = evaluate_pope(d / "labels", d / "llava_pope_test.jsonl", d / "answers.jsonl")
    assert list(result["categories"]) == ["adversarial", "popular", "random"]
    for cat, (counts, f1) in REFERENCE.items():
        m = result["categories"][cat]
        assert (m["tp"], m["fp"], m["tn"], m["fn"]) == counts
        assert 100 * m["f1"] == pytest.approx(f1, abs=0.001)
    assert result["categories"]["adversarial"]["yes_ratio"] == pytest.approx(0.433)
    assert result["mean_f1"] == pytest.approx(85.95, abs=0.005)


def test_cli_reference(ref13b, tmp_path, capsys):
    d = ref13b / "pope"
    out = tmp_path / "pope" / "k64" / "score.json"
    eval_pope.main(["--annotation-dir", str(d / "labels"), "--question-file", str(d / "llava_pope_test.jsonl"),
                    "--result-file", str(d / "answers.jsonl"), "--save-json", str(out), "--k", "64"])
    text = capsys.readouterr().out
    assert "F1: 84.459" in text and "F1: 86.246" in text and "F1: 87.136" in text
    assert "Mean F1 over 3 categories: 85.95" in text
    rec = json.loads(out.read_text())
    assert rec["benchmark"] == "POPE" and rec["k"] == 64
    assert rec["headline"] == pytest.approx(85.94688, abs=1e-4)


def _small_pope(tmp_path, n_labels):
    qs = [{"question_id": i, "image": "x.jpg", "text": "q", "category": "random"} for i in range(3)]
    write_jsonl(tmp_path / "q.jsonl", qs)
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": i, "text": t} for i, t in enumerate(["Yes", "No", "Yes"])])
    (tmp_path / "labels").mkdir()
    write_jsonl(tmp_path / "labels" / "coco_pope_random.json", [{"label": l} for l in ["yes", "no", "no", "yes"][:n_labels]])


def test_small_case(tmp_path):
    _small_pope(tmp_path, 3)
    res = evaluate_pope(tmp_path / "labels", tmp_path / "q.jsonl", tmp_path / "a.jsonl")
    m = res["categories"]["random"]
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 1, 0)
    assert res["mean_f1"] == pytest.approx(100 * 2 / 3)


def test_count_mismatch_names_category(tmp_path):
    _small_pope(tmp_path, 4)
    with pytest.raises(ValueError, match=r"category 'random': 3 answers but 4 labels"):
        evaluate_pope(tmp_path / "labels", tmp_path / "q.jsonl", tmp_path / "a.jsonl")


def test_missing_label_file(tmp_path):
    _small_pope(tmp_path, 3)
    (tmp_path / "labels" / "coco_pope_random.json").unlink()
    with pytest.raises(FileNotFoundError, match="category 'random'"):
        evaluate_pope(tmp_path / "labels", tmp_path / "q.jsonl", tmp_path / "a.jsonl")
