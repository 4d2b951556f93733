"""SEED-Bench: per-type / image / video accuracy and the upload jsonl."""

import json

import pytest

from llava.eval import eval_seed
from llava.eval.eval_seed import build_upload, group_answers, score_seed
from llava.eval.io_utils import read_jsonl, write_jsonl

ANNOTATION = {
    "question_type": {"Scene Understanding": 1, "Instance Counting": 2, "Action Recognition": 10},
    "questions": [
        {"question_id": "101", "question_type_id": 1, "data_type": "image", "answer": "A"},
        {"question_id": "102", "question_type_id": 1, "data_type": "image", "answer": "B"},
        {"question_id": "103", "question_type_id": 2, "data_type": "image", "answer": "C"},
        {"question_id": "104", "question_type_id": 10, "data_type": "video", "answer": "D"},
    ],
}


def test_unanswered_data_type_is_not_expected(tmp_path, capsys):
    """LLaVA answers only SEED's image questions: no video answer at all is complete, an extra id is not."""
    (tmp_path / "seed.json").write_text(json.dumps(ANNOTATION))
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": q, "text": "A"} for q in ("101", "102", "103")])
    res = eval_seed.main(["--annotation-file", str(tmp_path / "seed.json"), "--result-file", str(tmp_path / "a.jsonl")])
    assert res["image_accuracy"] == pytest.approx(100 / 3) and "warning" not in capsys.readouterr().err
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": q, "text": "A"} for q in ("101", "102", "103", "999")])
    with pytest.raises(ValueError, match=r"a.jsonl: 1 predictions match no question in .*seed.json \(first: '999'\); "):
        eval_seed.main(["--annotation-file", str(tmp_path / "seed.json"), "--result-file", str(tmp_path / "a.jsonl")])


def test_repeated_question_ids_match_in_order():
    annotation = {"questions": [{"question_id": "7", "question_type_id": 1, "answer": a} for a in "AB"]}
    answers = group_answers([{"question_id": 7, "text": "A"}, {"question_id": "7", "text": "B"}])
    assert score_seed(annotation, answers)["accuracy"] == 100.0
    assert [r["prediction"] for r in build_upload(annotation, answers)[0]] == ["A", "B"]


def test_small_case(tmp_path, capsys):
    (tmp_path / "seed.json").write_text(json.dumps(ANNOTATION))
    write_jsonl(tmp_path / "a.jsonl", [{"question_id": "101", "text": "A"}, {"question_id": 102, "text": "C"},
                                       {"question_id": "104", "text": " D "}])
    args = ["--annotation-file", str(tmp_path / "seed.json"), "--result-file", str(tmp_path / "a.jsonl"),
            "--result-upload-file", str(tmp_path / "up.jsonl")]
    with pytest.raises(ValueError) as err:
        eval_seed.main(args)
    assert str(err.value) == (
        f"{tmp_path / 'a.jsonl'}: 1 of 4 questions in {tmp_path / 'seed.json'} have no prediction (first: '103'); "
        "no score over an incomplete set: answer every question, or pass --allow-incomplete to score what is there")
    assert not (tmp_path / "up.jsonl").exists()
    res = eval_seed.main([*args, "--allow-incomplete"])
    assert res["image_accuracy"] == pytest.approx(100 / 3) and res["video_accuracy"] == pytest.approx(100.0)
    assert res["accuracy"] == pytest.approx(50.0) and res["missing"] == 1
    assert res["per_type"] == {"Scene Understanding": 50.0, "Instance Counting": 0.0, "Action Recognition": 100.0}
    assert "Total accuracy: 50.00%" in capsys.readouterr().out
    assert read_jsonl(tmp_path / "up.jsonl")[2] == {"question_id": "103", "prediction": ""}


def test_reference_upload_format(ref13b, tmp_path):
    """Rebuilding the published upload from its own predictions reproduces the file byte for byte."""
    path = ref13b / "seed_bench" / "answers_upload.jsonl"
    rows = read_jsonl(path)
    assert len(rows) == 19242 and {r["prediction"] for r in rows} <= {"A", "B", "C", "D"}
    # 14,233 image questions (numeric ids; "49914" appears twice) then 5,009 video questions "v0".."v5008"
    assert [r["question_id"] for r in rows[14233:]] == [f"v{i}" for i in range(5009)]
    assert len({r["question_id"] for r in rows[:14233]}) == 14232
    annotation = {"questions": [{"question_id": r["question_id"], "question_type_id": 1, "answer": "A",
                                 "data_type": "video" if r["question_id"].startswith("v") else "image"} for r in rows]}
    answers = group_answers([{"question_id": int(r["question_id"]) if r["question_id"].isdigit() else r["question_id"],
                              "text": r["prediction"]} for r in rows])
    upload, missing = build_upload(annotation, answers)
    write_jsonl(tmp_path / "up.jsonl", upload)
    assert missing == 0 and (tmp_path / "up.jsonl").read_bytes() == path.read_bytes()
    n_a = sum(r["prediction"] == "A" for r in rows[:14233])
    assert score_seed(annotation, answers)["image_accuracy"] == pytest.approx(100 * n_a / 14233)
