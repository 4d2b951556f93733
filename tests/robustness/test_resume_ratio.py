"""Resuming with `--visual-token-ratio` into an answers file written without one. A run without a ratio
records no `visual_token_ratio`, and a field a record lacks was not compared, so the ratio run found
"nothing left to answer" and its results were the unpruned ones. Now the missing field reads as None."""

from __future__ import annotations

import json

import pytest

from llava.eval.answers_writer import check_resume
from llava.eval import model_video_qa


def _record(**meta):
    return json.dumps({"question_id": "v0_0", "prompt": "what moves?", "text": "x", "model_id": "model",
                       "metadata": {"visual_token_num": None, "pruning_method": "fastervlm", **meta}}) + "\n"


def test_a_ratio_run_does_not_resume_into_an_unpruned_file(tmp_path):
    path = tmp_path / "ans.jsonl"
    path.write_text(_record())
    with pytest.raises(ValueError, match=r"was written with visual_token_ratio=None, this run asks for 0\.5; use a new "
                                         r"--answers-file or --no-resume$"):
        check_resume(path, {"visual_token_num": None, "visual_token_ratio": 0.5})
    check_resume(path, {"visual_token_num": None, "visual_token_ratio": None})  # the same run resumes
    path.write_text(_record(visual_token_ratio=0.5))
    check_resume(path, {"visual_token_num": None, "visual_token_ratio": 0.5})


def test_the_video_driver_refuses_it_before_loading_the_model(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "v0.mp4").write_bytes(b"\0")
    (tmp_path / "model").mkdir()  # never loaded: the refusal comes first
    (tmp_path / "q.json").write_text(json.dumps([{"video_name": "v0", "question": "what moves?", "question_id": "v0_0"}]))
    (tmp_path / "ans.jsonl").write_text(_record())
    with pytest.raises(ValueError, match=r"written with visual_token_ratio=None, this run asks for 0\.5"):
        model_video_qa.main(["--model-path", str(tmp_path / "model"), "--question-file", str(tmp_path / "q.json"),
                             "--video-folder", str(tmp_path / "videos"), "--answers-file", str(tmp_path / "ans.jsonl"),
                             "--visual-token-ratio", "0.5", "--device", "cpu"])
