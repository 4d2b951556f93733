"""VQAv2 / VizWiz: offline val accuracy and the test-server upload files."""

import json

import pytest

from llava.eval import eval_vqa
from llava.eval.eval_vqa import build_upload, score_vqa
from llava.eval.io_utils import load_answers, read_json, read_jsonl, write_jsonl


def test_reference_vizwiz_upload_is_identical(ref13b, tmp_path, capsys):
    d = ref13b / "vizwiz"
    out = tmp_path / "upload.json"
    res = eval_vqa.main(["submit", "--benchmark", "vizwiz", "--question-file", str(d / "llava_test.jsonl"),
                         "--result-file", str(d / "answers.jsonl"), "--result-upload-file", str(out)])
    assert res == {"entries": 8000, "missing": 0}
    assert "wrote 8000 answers" in capsys.readouterr().out
    expected = read_json(d / "answers_upload.json")
    got = read_json(out)
    assert len(got) == len(expected) == 8000
    assert sum(a == b for a, b in zip(got, expected)) == 8000
    assert out.read_bytes() == (d / "answers_upload.json").read_bytes()


def test_vqav2_upload_fills_missing_answers():
    questions = [{"question_id": 1, "image": "a.jpg"}, {"question_id": 2, "image": "b.jpg"}]
    upload, missing = build_upload("vqav2", questions, [{"question_id": 1, "text": "Two."}])
    assert upload == [{"question_id": 1, "answer": "2"}, {"question_id": 2, "answer": ""}]
    assert missing == 1


def test_vqav2_val_score(tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"annotations": [
        {"question_id": 10, "answers": [{"answer": "yes", "answer_id": i} for i in range(10)]},
        {"question_id": 11, "answers": [{"answer": "2"}] * 2 + [{"answer": "3"}] * 8},
    ]}))
    res = tmp_path / "ans.jsonl"
    write_jsonl(res, [{"question_id": 10, "text": "Yes"}, {"question_id": 11, "text": "two"}])
    out = eval_vqa.main(["score", "--benchmark", "vqav2", "--annotation-file", str(ann), "--result-file", str(res),
                         "--save-json", str(tmp_path / "s.json"), "--k", "128"])
    assert out["accuracy"] == pytest.approx(100 * (1.0 + 0.6) / 2)
    assert "Accuracy: 80.00%" in capsys.readouterr().out
    rec = read_json(tmp_path / "s.json")
    assert rec["benchmark"] == "VQAv2" and rec["k"] == 128


def test_vizwiz_val_score_needs_question_file(tmp_path):
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps([{"image": "V_1.jpg", "question": "q", "answers": [{"answer": "unanswerable"}] * 10}]))
    write_jsonl(tmp_path / "q.jsonl", [{"question_id": 0, "image": "V_1.jpg", "text": "q"}])
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": 0, "text": "Unanswerable"}])
    assert score_vqa("vizwiz", ann, tmp_path / "a.jsonl", tmp_path / "q.jsonl")["accuracy"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="pass --question-file"):
        score_vqa("vizwiz", ann, tmp_path / "a.jsonl")


def test_reference_vizwiz_answers_score_against_their_own_upload(ref13b, tmp_path):
    """Scoring machinery on real answers: GT = the normalised upload answer x10 gives 100%."""
    d = ref13b / "vizwiz"
    upload = read_json(d / "answers_upload.json")
    ann = tmp_path / "val.json"
    ann.write_text(json.dumps([{"image": u["image"], "answers": [u["answer"]] * 10} for u in upload]))
    res = score_vqa("vizwiz", ann, d / "answers.jsonl", d / "llava_test.jsonl")
    assert res == {"samples": 8000, "accuracy": pytest.approx(100.0)}
