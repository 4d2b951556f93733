"""Every scorer refuses a score over an incomplete set (missing or extra predictions) unless asked."""

from __future__ import annotations

import json

import pytest

from llava.eval import eval_gqa, eval_mmbench, eval_mme, eval_mmvet_summary, eval_pope, eval_vqa
from llava.eval.coverage import check_coverage
from llava.eval.io_utils import write_json, write_jsonl

TAIL = "no score over an incomplete set: answer every question, or pass --allow-incomplete to score what is there"


def test_check_coverage_counts_and_first_ids(capsys):
    expected = [f"q{i}" for i in range(10)]
    with pytest.raises(ValueError) as err:
        check_coverage(expected, ["q0", "q7", "x1", "x2"], source="A", reference="Q")
    assert str(err.value) == ("A: 8 of 10 questions in Q have no prediction (first: 'q1', 'q2', 'q3', 'q4', 'q5', ...); "
                              f"2 predictions match no question in Q (first: 'x1', 'x2'); {TAIL}")
    cov = check_coverage(expected, ["q0", "x1"], source="A", reference="Q", allow_incomplete=True)
    assert (cov.expected, len(cov.missing), cov.extra) == (10, 9, ["x1"])
    assert capsys.readouterr().err.startswith("warning: A: 9 of 10 questions in Q have no prediction")
    assert check_coverage([1, 2], ["2", "1"], source="A", reference="Q").complete  # ids compare as strings
    assert check_coverage([1], [1, 5], source="A", reference="Q", known=[1, 5]).complete  # known, not scored


def test_gqa_missing_and_extra(tmp_path, capsys):
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": "1", "text": "yes"}, {"question_id": "9", "text": "no"}])
    write_json(tmp_path / "q.json", {"1": {"answer": "yes"}, "2": {"answer": "no"}, "3": {"answer": "x", "isBalanced": False}})
    args = ["--result-file", str(tmp_path / "a.jsonl"), "--questions", str(tmp_path / "q.json"),
            "--save-json", str(tmp_path / "score.json")]
    with pytest.raises(ValueError) as err:
        eval_gqa.main(args)
    assert str(err.value) == (f"{tmp_path / 'a.jsonl'}: 1 of 2 questions in {tmp_path / 'q.json'} have no prediction "
                              f"(first: '2'); 1 predictions match no question in {tmp_path / 'q.json'} (first: '9'); {TAIL}")
    assert not (tmp_path / "score.json").exists()
    out = eval_gqa.main([*args, "--allow-incomplete"])
    assert (out["correct"], out["questions"]) == (1, 2)  # the unanswered question counts as wrong


def test_pope_incomplete_scores_each_answer_against_its_own_label(tmp_path):
    qs = [{"question_id": i, "image": "x.jpg", "text": "q", "category": "random"} for i in range(4)]
    write_jsonl(tmp_path / "q.jsonl", qs)
    (tmp_path / "labels").mkdir()
    write_jsonl(tmp_path / "labels" / "coco_pope_random.json", [{"label": x} for x in ["yes", "no", "no", "yes"]])
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "text": "No"}, {"question_id": 3, "text": "Yes"}])
    with pytest.raises(ValueError) as err:
        eval_pope.evaluate_pope(tmp_path / "labels", tmp_path / "q.jsonl", tmp_path / "a.jsonl")
    assert str(err.value) == (f"{tmp_path / 'a.jsonl'}: 2 of 4 questions in {tmp_path / 'q.jsonl'} have no prediction "
                              f"(first: '0', '2'); {TAIL}")
    res = eval_pope.evaluate_pope(tmp_path / "labels", tmp_path / "q.jsonl", tmp_path / "a.jsonl", allow_incomplete=True)
    m = res["categories"]["random"]
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 0, 1, 0)  # q1 "no" vs label no, q3 "yes" vs label yes


def test_mmbench_unanswered_rows(tmp_path):
    (tmp_path / "dev.tsv").write_text("index\tquestion\tA\tB\tanswer\n1\tq\tx\ty\tA\n2\tq\tx\ty\tB\n")
    (tmp_path / "a.jsonl").write_text('{"question_id": 1, "text": "A"}\n')
    args = ["--result-file", str(tmp_path / "a.jsonl"), "--annotation-file", str(tmp_path / "dev.tsv")]
    with pytest.raises(ValueError) as err:
        eval_mmbench.main(args)
    assert str(err.value) == (f"{tmp_path / 'a.jsonl'}: 1 of 2 questions in {tmp_path / 'dev.tsv'} have no prediction "
                              f"(first: '2'); {TAIL}")
    out = eval_mmbench.main([*args, "--allow-incomplete"])
    assert (out["hits"], out["questions"], out["unanswered"]) == (1, 2, 1)


def test_vqa_score_and_submit(tmp_path):
    write_json(tmp_path / "ann.json", {"annotations": [{"question_id": 1, "answers": ["two"] * 10},
                                                       {"question_id": 2, "answers": ["red"] * 10}]})
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "text": "Two"}, {"question_id": 3, "text": "x"}])
    score = ["score", "--benchmark", "vqav2", "--annotation-file", str(tmp_path / "ann.json"),
             "--result-file", str(tmp_path / "a.jsonl")]
    with pytest.raises(ValueError) as err:
        eval_vqa.main(score)
    assert str(err.value) == (f"{tmp_path / 'a.jsonl'}: 1 of 2 questions in {tmp_path / 'ann.json'} have no prediction "
                              f"(first: '2'); 1 predictions match no question in {tmp_path / 'ann.json'} (first: '3'); {TAIL}")
    assert eval_vqa.main([*score, "--allow-incomplete"])["samples"] == 1
    # an upload may leave questions unanswered (test-dev is part of test2015), but not answer unknown ones
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": i, "text": "?"} for i in (1, 2)])
    submit = ["submit", "--benchmark", "vqav2", "--question-file", str(tmp_path / "q.jsonl"),
              "--result-file", str(tmp_path / "a.jsonl"), "--result-upload-file", str(tmp_path / "up.json")]
    with pytest.raises(ValueError, match=r"a.jsonl: 1 of 2 questions .* 1 predictions match no question in .*q.jsonl "
                                         r"\(first: '3'\)"):
        eval_vqa.main(submit)
    assert not (tmp_path / "up.json").exists()
    assert eval_vqa.main([*submit, "--allow-incomplete"]) == {"entries": 2, "missing": 1}


def test_mme_unanswered_questions(tmp_path):
    gt = tmp_path / "gt.tsv"
    gt.write_text("category\timage\tquestion\tanswer\n"
                  "color\t1.jpg\tIs it red? Please answer yes or no.\tYes\n"
                  "color\t1.jpg\tIs it blue? Please answer yes or no.\tNo\n")
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": "color/1.jpg", "prompt": "Is it red?", "text": "Yes"}])
    with pytest.raises(ValueError) as err:
        eval_mme.main(["--answers-file", str(tmp_path / "a.jsonl"), "--gt", str(gt), "--results-dir", str(tmp_path / "r")])
    assert str(err.value) == (f"{tmp_path / 'a.jsonl'}: 1 of 2 questions in {gt} have no prediction "
                              f"(first: 'color/1: Is it blue? Please answer yes or no.'); {TAIL}")
    assert not (tmp_path / "r").exists()


def test_mmvet_grades_against_the_capability_map(tmp_path):
    (tmp_path / "grades.json").write_text(json.dumps({"v1_0": {"score": [1.0]}, "v1_9": {"score": [0.0]}}))
    (tmp_path / "mm-vet.json").write_text(json.dumps({"v1_0": {"capability": ["rec"]}, "v1_1": {"capability": ["ocr"]}}))
    args = ["--grade-file", str(tmp_path / "grades.json"), "--mmvet-json", str(tmp_path / "mm-vet.json")]
    with pytest.raises(ValueError) as err:
        eval_mmvet_summary.main(args)
    assert str(err.value) == (f"{tmp_path / 'grades.json'}: 1 of 2 questions in {tmp_path / 'mm-vet.json'} have no "
                              f"prediction (first: 'v1_1'); 1 predictions match no question in {tmp_path / 'mm-vet.json'} "
                              f"(first: 'v1_9'); {TAIL}")
    out = eval_mmvet_summary.main([*args, "--allow-incomplete"])
    assert out["samples"] == 1 and out["capabilities"] == {"rec": 100.0}


def test_answer_rows_must_be_objects_with_string_text(tmp_path):
    from llava.eval.io_utils import load_answers

    (tmp_path / "a.jsonl").write_text('{"question_id": 1, "text": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError) as err:
        load_answers(tmp_path / "a.jsonl")
    assert str(err.value) == (f"{tmp_path / 'a.jsonl'}: answer 2 is a JSON list, not an object "
                              "{question_id, prompt, text, ...}; is this a LLaVA answer file?")
    (tmp_path / "a.jsonl").write_text('{"question_id": 1, "text": null}\n')
    with pytest.raises(ValueError) as err:
        load_answers(tmp_path / "a.jsonl")
    assert str(err.value) == (f"{tmp_path / 'a.jsonl'}: answer 1 (question 1) has a non-string text None; "
                              "is this a LLaVA answer file?")


def test_scorer_outputs_may_not_overwrite_inputs(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": "1", "text": "yes"}])
    write_json(tmp_path / "q.json", {"1": {"answer": "yes"}})
    before = (tmp_path / "a.jsonl").read_bytes()
    with pytest.raises(ValueError) as err:
        eval_gqa.main(["--result-file", str(tmp_path / "a.jsonl"), "--prediction-file", str(tmp_path / "a.jsonl")])
    assert str(err.value) == (f"--prediction-file {tmp_path / 'a.jsonl'} is the same file as --result-file "
                              f"{tmp_path / 'a.jsonl'}, which it would overwrite; choose another --prediction-file")
    (tmp_path / "link.json").symlink_to(tmp_path / "q.json")
    with pytest.raises(ValueError, match=r"--save-json .*link.json is the same file as --questions .*q.json, "):
        eval_gqa.main(["--result-file", str(tmp_path / "a.jsonl"), "--questions", str(tmp_path / "q.json"),
                       "--save-json", str(tmp_path / "link.json")])
    assert (tmp_path / "a.jsonl").read_bytes() == before and (tmp_path / "q.json").read_text() == '{\n  "1": {\n    "answer": "yes"\n  }\n}'
