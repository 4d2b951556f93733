"""Video-LLaVA question and ground-truth files that used to be answered silently wrong: a repeated
question_id (answered twice, later refused by the judge), a null or list question_id (written as
null / "[1]"), and a null ground-truth answer (copied into the records as the text "None"). Each is
refused before the model loads, naming the file, the row and what to fix."""

from __future__ import annotations

import json

import pytest

from llava.eval import model_video_qa


@pytest.fixture()
def folder(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v0.mp4").write_bytes(b"\0")  # only its existence is read before the model loads
    (tmp_path / "model").mkdir()
    return tmp_path


def _run(folder, questions, answers=None):
    (folder / "q.json").write_text(json.dumps(questions))
    argv = ["--model-path", str(folder / "model"), "--question-file", str(folder / "q.json"),
            "--video-folder", str(folder / "videos"), "--answers-file", str(folder / "ans.jsonl"), "--device", "cpu"]
    if answers is not None:
        (folder / "a.json").write_text(json.dumps(answers))
        argv += ["--gt-answers-file", str(folder / "a.json")]
    model_video_qa.main(argv)


def _q(qid, question="what moves?"):
    return {"video_name": "v0", "question": question, "question_id": qid}


def test_a_repeated_question_id_is_refused_even_with_another_question(folder):
    with pytest.raises(ValueError, match=r"q\.json\[1\]: question_id 'v0_0' repeats an earlier question's \(the "
                                         r"answers and the judge are keyed by it\); give every question its own id$"):
        _run(folder, [_q("v0_0", "what moves?"), _q("v0_0", "where does it go?")])
    assert not (folder / "ans.jsonl").exists()


@pytest.mark.parametrize("qid", [None, [1], {"a": 1}, True, 1.5])
def test_a_question_id_that_is_not_a_string_or_integer_is_refused(folder, qid):
    with pytest.raises(ValueError, match=rf"q\.json\[0\]: question_id {repr(qid).replace('[', '.').replace(']', '.')} "
                                         r"must be a string or an integer; fix the question file$"):
        _run(folder, [_q(qid)])


@pytest.mark.parametrize("answer", [None, ["a", "b"], {"text": "a"}, False])
def test_a_ground_truth_that_is_not_a_text_is_refused(folder, answer):
    with pytest.raises(ValueError, match=r"a\.json\[1\]: the answer of question v0_1 is .*, not a text; fix the "
                                         r"answers file \(the judge compares against it\)$"):
        _run(folder, [_q("v0_0"), _q("v0_1")], [{"answer": "a square"}, {"answer": answer}])
    assert not (folder / "ans.jsonl").exists()


def test_integer_ids_and_numeric_answers_still_read(folder):
    (folder / "q.json").write_text(json.dumps([_q(7), _q("v0_1")]))
    (folder / "a.json").write_text(json.dumps([{"answer": 3}, {"answer": "right"}]))
    items = model_video_qa.read_items(str(folder / "q.json"), str(folder / "a.json"), str(folder / "videos"))
    assert [(it.question_id, it.answer) for it in items] == [(7, "3"), ("v0_1", "right")]
