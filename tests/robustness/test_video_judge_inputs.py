"""Bad flags and files of the video-QA judge (`python -m llava.eval.eval_video_qa`), each refused with one
line before a request is sent. Before: a negative --num-samples judged the wrong subset without a word, 0
blamed the answers, a question row without question_id (or not an object) was a KeyError/TypeError
traceback, a base URL without a scheme said only "unknown url type", a negative --timeout "Timeout value
out of range", and a missing file was a bare "[Errno 2]"."""

from __future__ import annotations

import json

import pytest

from llava.eval import eval_video_qa


@pytest.fixture()
def files(tmp_path):
    rows = [{"question_id": f"q{i}", "prompt": "what?", "text": "a cat", "answer": "a cat"} for i in range(3)]
    (tmp_path / "ans.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "q.json").write_text(json.dumps([{"video_name": "v", "question": "what?", "question_id": f"q{i}"}
                                                 for i in range(4)]))
    return tmp_path


def _judge(files, *extra):
    eval_video_qa.main(["--answers-file", str(files / "ans.jsonl"), "--judgements", str(files / "j.jsonl"),
                        "--judge-base-url", "http://127.0.0.1:9/v1", "--no-progress", *extra])


@pytest.mark.parametrize("extra, expected", [
    (["--num-samples", "-1"], r"--num-samples -1: give a count >= 1, together with the --question-file"),
    (["--num-samples", "0"], r"--num-samples 0: give a count >= 1"),
    (["--num-samples", "3"], r"--num-samples 3: give a count >= 1, together with the --question-file whose first N"),
    (["--timeout", "-5"], r"--timeout must be > 0 seconds, got -5\.0"),
    (["--http-retries", "0"], r"--http-retries must be >= 1, got 0"),
    (["--judge-max-tokens", "0"], r"--judge-max-tokens must be >= 1, got 0"),
    (["--judge-base-url", "notaurl"], r"--judge-base-url 'notaurl': expected an http\(s\) URL of an OpenAI-compatible "
                                      r"endpoint, e.g\. http://localhost:8000/v1"),
    (["--judge-base-url", "ftp://host/v1"], r"--judge-base-url 'ftp://host/v1': expected an http\(s\) URL"),
])
def test_bad_flags_are_refused_before_any_request(files, extra, expected):
    if extra[0] == "--num-samples" and extra[1] != "3":
        extra = [*extra, "--question-file", str(files / "q.json")]
    with pytest.raises(ValueError, match=rf"^{expected}"):
        _judge(files, *extra)
    assert not (files / "j.jsonl").exists()


@pytest.mark.parametrize("rows", [[{"video_name": "v", "question": "what?"}], ["q0"]])
def test_a_question_row_without_an_id_is_named(files, rows):
    (files / "bad_q.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"bad_q\.json\[0\]: expected a question with a 'question_id' \(Video-LLaVA's "
                                         r"question file\); check --question-file$"):
        _judge(files, "--question-file", str(files / "bad_q.json"))


@pytest.mark.parametrize("flag", ["--answers-file", "--question-file", "--prompt-file"])
def test_a_missing_file_names_its_flag(files, flag):
    argv = ["--answers-file", str(files / "ans.jsonl"), "--judgements", str(files / "j.jsonl"), "--no-progress"]
    if flag == "--answers-file":
        argv[1] = str(files / "nope.jsonl")
    else:
        argv += [flag, str(files / "nope.json")]
    with pytest.raises(FileNotFoundError, match=rf"^{flag} .*nope\.json\w* not found$"):
        eval_video_qa.main(argv)
