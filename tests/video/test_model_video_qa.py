"""The video-QA driver on the tiny Video-LLaVA and generated videos: answers and their metadata, first-N,
a K sweep, resume, chunks, and a bad video that stops the run without losing finished answers."""

from __future__ import annotations

import json
import shutil

import pytest

from llava.eval import model_video_qa
from llava.video_io import write_test_video

from video_helpers import FRAMES, moving_square_frames


@pytest.fixture()
def qa(tmp_path, videos):
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(videos[0], folder / "v0.mkv")
    shutil.copy(videos[2], folder / "v1.mp4")
    questions = [{"video_name": "v0", "question": "what moves?", "question_id": "v0_0"},
                 {"video_name": "v1", "question": "what color is it?", "question_id": "v1_0"},
                 {"video_name": "v0", "question": "where does it go?", "question_id": "v0_1"}]
    answers = [{"answer": "a square", "question_id": "v0_0"}, {"answer": "pink", "question_id": "v1_0"},
               {"answer": "right", "question_id": "v0_1"}]
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(answers))
    return tmp_path


def argv(qa, video_dir, *extra):
    return ["--model-path", str(video_dir), "--question-file", str(qa / "q.json"),
            "--gt-answers-file", str(qa / "a.json"), "--video-folder", str(qa / "videos"),
            "--conv-mode", "llava_v1", "--temperature", "0", "--max_new_tokens", "3", "--device", "cpu",
            *extra]


def records(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def test_answers_first_n_with_t_times_k_tokens_then_resumes(qa, video_dir):
    out = qa / "ans.jsonl"
    n = model_video_qa.main(argv(qa, video_dir, "--answers-file", str(out), "--num-samples", "2",
                                 "--visual-token-num", "13", "--batch-size", "2"))
    assert n == 2
    recs = records(out)
    assert [r["question_id"] for r in recs] == ["v0_0", "v1_0"]
    assert [r["answer"] for r in recs] == ["a square", "pink"] and recs[1]["video"] == "v1.mp4"
    meta = recs[0]["metadata"]
    assert meta["visual_token_num"] == 13 and meta["num_frames"] == FRAMES
    assert meta["visual_tokens"] == FRAMES * 13 and meta["visual_tokens_per_frame"] == 13
    assert meta["pruning_method"] == "fastervlm" and meta["video_mode"] == "frame"
    assert model_video_qa.main(argv(qa, video_dir, "--answers-file", str(out), "--num-samples", "2",
                                    "--visual-token-num", "13")) == 0
    for flag, value in (("--num-frames", "4"), ("--video-mode", "temporal")):
        with pytest.raises(ValueError, match=rf"written with {flag[2:].replace('-', '_')}=\w+, this run asks for"):
            model_video_qa.main(argv(qa, video_dir, "--answers-file", str(out), "--visual-token-num", "13",
                                     flag, value))


def test_a_sweep_writes_one_file_per_k_and_chunks_split_the_questions(qa, video_dir):
    out = qa / "k{k}.jsonl"
    model_video_qa.main(argv(qa, video_dir, "--answers-file", str(out), "--visual-token-num", "4,64",
                             "--num-chunks", "2", "--chunk-idx", "1"))
    for k in (4, 64):
        recs = records(qa / f"k{k}.jsonl")
        assert [r["question_id"] for r in recs] == ["v0_1"]  # chunk 1 of 2 over three questions
        assert recs[0]["metadata"]["visual_tokens"] == FRAMES * k
    single = qa / "single.jsonl"  # the sweep's one tower run per batch answers as a run at that K alone
    model_video_qa.main(argv(qa, video_dir, "--answers-file", str(single), "--visual-token-num", "4",
                             "--num-chunks", "2", "--chunk-idx", "1"))
    assert [r["text"] for r in records(single)] == [r["text"] for r in records(qa / "k4.jsonl")]


def test_a_bad_video_names_the_question_and_keeps_the_finished_answers(qa, video_dir):
    (qa / "videos" / "v1.mp4").write_text("not a video")
    out = qa / "ans.jsonl"
    with pytest.raises(ValueError, match=r"question v1_0: video .*v1\.mp4: not a readable video"):
        model_video_qa.main(argv(qa, video_dir, "--answers-file", str(out), "--visual-token-num", "8"))
    assert [r["question_id"] for r in records(out)] == ["v0_0"]
    write_test_video(qa / "videos" / "v1.mp4", moving_square_frames(seed=3), codec="mpeg4")
    assert model_video_qa.main(argv(qa, video_dir, "--answers-file", str(out), "--visual-token-num", "8")) == 2
    assert [r["question_id"] for r in records(out)] == ["v0_0", "v1_0", "v0_1"]


def test_inputs_are_checked_before_the_model_loads(qa, video_dir, tmp_path):
    out = str(qa / "ans.jsonl")
    with pytest.raises(FileNotFoundError, match=r"question v1_0: video 'v1' not found in .*check --video-folder"):
        (qa / "videos" / "v1.mp4").unlink()
        model_video_qa.main(argv(qa, video_dir, "--answers-file", out))
    (qa / "a.json").write_text(json.dumps([{"answer": "x"}]))
    with pytest.raises(ValueError, match=r"holds 1 answers for the 3 questions"):
        model_video_qa.main(argv(qa, video_dir, "--answers-file", out))
    flags = argv(qa, video_dir, "--answers-file", out)
    flags[flags.index("--video-folder") + 1] = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"video folder .*nope not found \(check --video-folder\)"):
        model_video_qa.main(flags)
