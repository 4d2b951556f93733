"""ScienceQA: answer parsing, problems.json rebuild, and the published 13B accuracy and output files."""

import json

import pytest

from llava.eval import eval_science_qa
from llava.eval.eval_science_qa import build_problems_from_llava_json, choice_index, parse_answer
from llava.eval.io_utils import read_json, write_jsonl


@pytest.mark.parametrize(
    "text, expected",
    [
        ("B", "B"),
        ("E", "E"),
        ("F", "FAILED"),  # not an option, no regex match
        ("b", "FAILED"),
        ("C. rock", "C"),
        ("C.rock", "FAILED"),
        ("C. ", "C"),
        ("Because... The answer is D.", "D"),
        ("The answer is A. Or: The answer is B.", "FAILED"),  # two matches
        ("The answer is Z!", "Z"),  # the regex '.' matches any character
        ("The answer is A", "FAILED"),
        ("", "FAILED"),
    ],
)
def test_parse_answer(text, expected):
    assert parse_answer(text) == expected


def test_choice_index_limits_to_choices():
    assert choice_index("B", 2) == 1
    assert choice_index("C", 2) == -1  # a letter beyond the choices counts as -1
    assert choice_index("FAILED", 5) == -1
    assert choice_index("Z", 5) == -1


def test_build_problems_keeps_newlines_inside_choices():
    items = [
        {"id": "7", "conversations": [
            {"from": "human", "value": "<image>\nContext: note\nA. x\nWhich closing?\nA. Your friend,\nSam\nB. your friend,\nSam"},
            {"from": "gpt", "value": "A"}]},
        {"id": "8", "conversations": [{"from": "human", "value": "Q?\nA. 1\nB. 2\nC. 3"}, {"from": "gpt", "value": "C"}]},
    ]
    assert build_problems_from_llava_json(items) == {
        "7": {"choices": ["Your friend,\nSam", "your friend,\nSam"], "answer": 0},
        "8": {"choices": ["1", "2", "3"], "answer": 2},
    }
    with pytest.raises(ValueError, match="problem 9: gold letter 'C'"):
        build_problems_from_llava_json([{"id": "9", "conversations": [
            {"from": "human", "value": "Q\nA. 1\nB. 2"}, {"from": "gpt", "value": "C"}]}])


def test_missing_prediction_is_failed(tmp_path):
    (tmp_path / "problems.json").write_text(json.dumps({"1": {"choices": ["a", "b"], "answer": 1},
                                                        "2": {"choices": ["a", "b"], "answer": 0}}))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["1", "2"]}))
    write_jsonl(tmp_path / "ans.jsonl", [{"question_id": "1", "prompt": "<image>\nQ", "text": "B"},
                                         {"question_id": "9", "prompt": "Q", "text": "A"}])
    args = ["--base-dir", str(tmp_path), "--result-file", str(tmp_path / "ans.jsonl"),
            "--output-result", str(tmp_path / "r.json")]
    with pytest.raises(ValueError) as err:  # refused by default, and nothing written
        eval_science_qa.main(args)
    assert str(err.value) == (
        f"{tmp_path / 'ans.jsonl'}: 1 of 2 questions in split 'test' of {tmp_path / 'pid_splits.json'} have no "
        f"prediction (first: '2'); 1 predictions match no question in split 'test' of {tmp_path / 'pid_splits.json'} "
        "(first: '9'); no score over an incomplete set: answer every question, or pass --allow-incomplete to score "
        "what is there")
    assert not (tmp_path / "r.json").exists()
    s = eval_science_qa.main([*args, "--allow-incomplete"])
    assert (s["correct"], s["total"], s["img_correct"], s["img_total"]) == (1, 2, 1, 1)
    r = read_json(tmp_path / "r.json")
    assert r["results"] == {"1": 1, "2": -1} and r["outputs"]["2"] == "FAILED"


def test_reference_13b(ref13b, tmp_path, capsys):
    d = ref13b / "scienceqa"
    base = tmp_path / "sqa"
    base.mkdir()
    problems = build_problems_from_llava_json(read_json(d / "llava_test_CQM-A.json"))
    assert len(problems) == 4241
    assert sum(any("\n" in c for c in p["choices"]) for p in problems.values()) == 41
    (base / "problems.json").write_text(json.dumps(problems))
    (base / "pid_splits.json").write_text((d / "pid_splits.json").read_text())

    published = read_json(d / "llava-v1.5-13b_output.jsonl")
    entries = {e["question_id"]: e for e in published["correct"] + published["incorrect"]}
    split = read_json(d / "pid_splits.json")["test"]
    write_jsonl(tmp_path / "answers.jsonl",
                [{"question_id": pid, "prompt": entries[pid]["question"], "text": entries[pid]["pred"]} for pid in split])

    s = eval_science_qa.main([
        "--base-dir", str(base), "--result-file", str(tmp_path / "answers.jsonl"), "--split", "test",
        "--output-file", str(tmp_path / "output.json"), "--output-result", str(tmp_path / "result.json"),
        "--options", "A", "B", "C", "D", "E", "--save-json", str(tmp_path / "score.json"),
    ])
    assert (s["correct"], s["total"], s["img_correct"], s["img_total"]) == (3155, 4241, 1445, 2017)
    assert s["accuracy"] == pytest.approx(74.39, abs=0.005) and s["img_accuracy"] == pytest.approx(71.64, abs=0.005)
    assert "Total: 4241, Correct: 3155, Accuracy: 74.39%, IMG-Accuracy: 71.64%" in capsys.readouterr().out
    assert read_json(tmp_path / "output.json") == published
    assert read_json(tmp_path / "result.json") == read_json(d / "llava-v1.5-13b_result.json")
    rec = read_json(tmp_path / "score.json")
    assert rec["benchmark"] == "SQA-IMG" and rec["headline"] == pytest.approx(100 * 1445 / 2017)


def test_reference_answer_sample_parses(ref13b):
    rows = [json.loads(ln) for ln in (ref13b / "scienceqa" / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and parse_answer(rows[0]["text"]) == "B"
