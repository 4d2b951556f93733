"""The video-QA judge (Video-LLaVA's protocol) against a local fake endpoint: reply parsing, the summary
rule, retries of malformed replies, failures counted, resume after an interruption, the key kept out of
every output, the rate limit, and the prompt file."""

from __future__ import annotations

import json

import pytest

from judge_server import FakeJudge, exact_match_judge, field
from llava.eval import eval_video_qa as vqa
from llava.eval.judge_client import JudgeError, RateLimiter

KEY = "sk-test-0123456789abcdef-never-written"


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The fake judge is local: no HTTP proxy of the environment may stand in between."""
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.mark.parametrize("reply, parsed", [
    ("{'pred': 'yes', 'score': 4}", ("yes", 4)),
    ("  {'pred': 'no', 'score': 0}\n", ("no", 0)),
    ('{"pred": "Yes", "score": 5}', ("yes", 5)),
    ("{'pred': 'yes', 'score': 4.8}", ("yes", 4)),        # int() truncates, as the original
    ("{'pred': 'no', 'score': '3'}", ("no", 3)),
    ("```python\n{'pred': 'no', 'score': 2}\n```", ("no", 2)),
    ("{'pred': 'yes', 'score': 6}", None),                # out of 0..5
    ("{'pred': 'maybe', 'score': 3}", None),
    ("{'pred': 'yes'}", None),
    ("{'pred': 'yes', 'score': True}", None),
    ("Sure! {'pred': 'yes', 'score': 4}", None),          # not a literal (the original failed it too)
    ("", None),
    ("__import__('os').system('true')", None),            # literal_eval never runs code
])
def test_parse_judgement(reply, parsed):
    assert vqa.parse_judgement(reply) == parsed


def test_summary_counts_yes_over_judged_and_mean_score():
    judgements = {"a": {"status": "ok", "pred": "yes", "score": 5}, "b": {"status": "ok", "pred": "no", "score": 2},
                  "c": {"status": "ok", "pred": "yes", "score": 4}, "d": {"status": "failed", "pred": None, "score": None}}
    out = vqa.summarize_judgements(judgements)
    assert out["accuracy"] == pytest.approx(100 * 2 / 3) and out["score"] == pytest.approx(11 / 3)
    assert (out["total"], out["judged"], out["failed"], out["yes"], out["no"]) == (4, 3, 1, 2, 1)
    assert out["accuracy_failed_as_no"] == pytest.approx(50.0) and out["score_failed_as_zero"] == pytest.approx(11 / 4)


def write_answers(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


ROWS = [  # model_video_qa's records: question_id, prompt, text (prediction), answer (ground truth), metadata
    {"question_id": "v_a_0", "prompt": "who is cooking?", "text": "man", "answer": "man",
     "metadata": {"pruning_method": "fastervlm", "visual_token_num": 13, "visual_tokens": 104}},
    {"question_id": "v_a_1", "prompt": "what is he cutting?", "text": "a carrot", "answer": "onion",
     "metadata": {"pruning_method": "fastervlm", "visual_token_num": 13, "visual_tokens": 104}},
    {"question_id": "v_b_0", "prompt": "what color is the car?", "text": "Red", "answer": "red",
     "metadata": {"pruning_method": "fastervlm", "visual_token_num": 13, "visual_tokens": 104}},
]


@pytest.fixture()
def answers(tmp_path):
    return write_answers(tmp_path / "answers.jsonl", ROWS)


def run(tmp_path, answers, judge, *extra, key=KEY, monkeypatch=None):
    if monkeypatch is not None:
        if key is None:
            monkeypatch.delenv("OPENAI_API_KEY", raising=False)
        else:
            monkeypatch.setenv("OPENAI_API_KEY", key)
    return vqa.main(["--answers-file", str(answers), "--judgements", str(tmp_path / "judgements.jsonl"),
                     "--benchmark", "msvd", "--judge-base-url", judge.url, "--retry-backoff", "0",
                     "--no-progress", *extra])


def judgement_lines(tmp_path):
    return [json.loads(x) for x in (tmp_path / "judgements.jsonl").read_text().splitlines()]


def test_judges_every_answer_and_writes_the_record(tmp_path, answers, monkeypatch, capsys):
    with FakeJudge(exact_match_judge) as judge:
        out = run(tmp_path, answers, judge, "--save-json", str(tmp_path / "k13.json"), "--k", "13",
                  monkeypatch=monkeypatch)
    assert (out["judged"], out["failed"], out["yes"]) == (3, 0, 2)
    assert out["accuracy"] == pytest.approx(200 / 3) and out["score"] == pytest.approx(11 / 3)
    first = judge.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["headers"]["Authorization"] == f"Bearer {KEY}"
    body = first["body"]
    assert body["model"] == "gpt-3.5-turbo" and body["temperature"] == 0.0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert (field(body, "Question"), field(body, "Correct answer"), field(body, "Predicted answer")) == \
        ("who is cooking?", "man", "man")
    record = json.loads((tmp_path / "k13.json").read_text())
    assert record["benchmark"] == "MSVD-QA" and record["k"] == 13 and record["headline"] == pytest.approx(200 / 3)
    assert record["metrics"]["score"] == pytest.approx(11 / 3) and record["metrics"]["failed"] == 0
    assert record["method"] == "fastervlm" and record["visual_tokens"] == 104
    assert [j["status"] for j in judgement_lines(tmp_path)] == ["ok"] * 3
    assert "MSVD-QA: accuracy 66.67  score 3.667  (judged 3, failed 0, of 3" in capsys.readouterr().out


def test_a_malformed_reply_is_asked_again(tmp_path, answers, monkeypatch):
    def judge_fn(body, n):
        return "I think they match." if n == 1 else exact_match_judge(body, n)

    with FakeJudge(judge_fn) as judge:
        out = run(tmp_path, answers, judge, monkeypatch=monkeypatch)
    assert len(judge.requests) == 4 and (out["judged"], out["failed"]) == (3, 0)
    first = judgement_lines(tmp_path)[0]
    assert first["attempts"] == 2 and first["replies"][0] == "I think they match." and first["pred"] == "yes"


def test_a_reply_that_never_parses_is_counted_as_failed(tmp_path, answers, monkeypatch, capsys):
    def judge_fn(body, n):
        return "no idea" if field(body, "Question") == "what is he cutting?" else exact_match_judge(body, n)

    with FakeJudge(judge_fn) as judge:
        out = run(tmp_path, answers, judge, "--malformed-retries", "2", "--save-json", str(tmp_path / "r.json"),
                  monkeypatch=monkeypatch)
    assert len(judge.requests) == 5  # 1 + 3 tries + 1
    assert (out["total"], out["judged"], out["failed"], out["yes"]) == (3, 2, 1, 2)
    assert out["accuracy"] == pytest.approx(100.0) and out["accuracy_failed_as_no"] == pytest.approx(200 / 3)
    failed = judgement_lines(tmp_path)[1]
    assert failed["status"] == "failed" and failed["attempts"] == 3 and failed["replies"] == ["no idea"] * 3
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["failed"] == 1
    assert "warning: 1 judge reply never parsed" in capsys.readouterr().err
    with FakeJudge(exact_match_judge) as judge:  # a rerun keeps it failed; --retry-failed asks again
        assert run(tmp_path, answers, judge, monkeypatch=monkeypatch)["failed"] == 1 and not judge.requests
        out = run(tmp_path, answers, judge, "--retry-failed", monkeypatch=monkeypatch)
    assert len(judge.requests) == 1 and (out["judged"], out["failed"]) == (3, 0)


def test_an_interrupted_run_resumes_without_asking_twice(tmp_path, answers, monkeypatch):
    def dies_after_two(body, n):
        return exact_match_judge(body, n) if n <= 2 else 503

    with FakeJudge(dies_after_two) as judge:
        with pytest.raises(JudgeError, match=r"failed after 2 tries: HTTP 503 .*rerun to resume"):
            run(tmp_path, answers, judge, "--http-retries", "2", monkeypatch=monkeypatch)
    assert [j["question_id"] for j in judgement_lines(tmp_path)] == ["v_a_0", "v_a_1"]
    with (tmp_path / "judgements.jsonl").open("a") as f:
        f.write('{"question_id": "v_b_0", "sta')  # a kill in the middle of a line
    with FakeJudge(exact_match_judge) as judge:
        out = run(tmp_path, answers, judge, monkeypatch=monkeypatch)
    assert [field(r["body"], "Question") for r in judge.requests] == ["what color is the car?"]
    assert (out["judged"], out["yes"]) == (3, 2)
    assert [j["question_id"] for j in judgement_lines(tmp_path)] == ["v_a_0", "v_a_1", "v_b_0"]


def test_judgements_of_other_answers_are_not_reused(tmp_path, answers, monkeypatch):
    with FakeJudge(exact_match_judge) as judge:
        run(tmp_path, answers, judge, monkeypatch=monkeypatch)
        other = write_answers(tmp_path / "other.jsonl", [{**ROWS[0], "text": "woman"}, *ROWS[1:]])
        with pytest.raises(ValueError, match=r"question v_a_0 was made with another prediction"):
            run(tmp_path, other, judge, monkeypatch=monkeypatch)
        with pytest.raises(ValueError, match=r"another judge_model"):
            run(tmp_path, answers, judge, "--judge-model", "local-judge", monkeypatch=monkeypatch)


def test_the_key_is_in_no_output_and_a_refused_key_stops_at_once(tmp_path, answers, monkeypatch, capsys):
    with FakeJudge(exact_match_judge) as judge:
        run(tmp_path, answers, judge, "--save-json", str(tmp_path / "rec.json"), monkeypatch=monkeypatch)
    with FakeJudge(lambda body, n: 401) as refusing:
        with pytest.raises(JudgeError, match=r"HTTP 401 .*the key in OPENAI_API_KEY was refused") as err:
            run(tmp_path, write_answers(tmp_path / "b.jsonl", ROWS[:1]), refusing, "--judgements",
                str(tmp_path / "j2.jsonl"), monkeypatch=monkeypatch)
    assert len(refusing.requests) == 1 and KEY not in str(err.value)
    captured = capsys.readouterr()
    for text in [captured.out, captured.err, *(p.read_text() for p in tmp_path.rglob("*") if p.is_file())]:
        assert KEY not in text


def test_an_unreachable_judge_is_a_clear_error(tmp_path, answers, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(JudgeError, match=rf"failed after 2 tries: network error for http://127.0.0.1:{port}/v1/"
                                         r"chat/completions: .*rerun to resume"):
        vqa.main(["--answers-file", str(answers), "--judgements", str(tmp_path / "j.jsonl"), "--judge-base-url",
                  f"http://127.0.0.1:{port}/v1", "--http-retries", "2", "--retry-backoff", "0", "--no-progress"])
    assert not (tmp_path / "j.jsonl").exists() or not (tmp_path / "j.jsonl").read_text()


def test_a_local_judge_needs_no_key_but_openai_does(tmp_path, answers, monkeypatch):
    with FakeJudge(exact_match_judge) as judge:
        assert run(tmp_path, answers, judge, key=None, monkeypatch=monkeypatch)["judged"] == 3
    assert "Authorization" not in judge.requests[0]["headers"]
    with pytest.raises(JudgeError, match="OPENAI_API_KEY is not set"):
        vqa.main(["--answers-file", str(answers), "--judgements", str(tmp_path / "x.jsonl"),
                  "--judge-base-url", "https://api.openai.com/v1"])


def test_prompt_file_and_score_only(tmp_path, answers, monkeypatch):
    official = {"system": "OFFICIAL SYSTEM TEXT", "user": "Q={question} A={answer} P={prediction} {'pred': 'yes'}"}
    (tmp_path / "prompt.json").write_text(json.dumps(official))
    with FakeJudge(lambda body, n: "{'pred': 'yes', 'score': 3}") as judge:
        run(tmp_path, answers, judge, "--prompt-file", str(tmp_path / "prompt.json"), monkeypatch=monkeypatch)
    messages = judge.requests[0]["body"]["messages"]
    assert messages == [{"role": "system", "content": "OFFICIAL SYSTEM TEXT"},
                        {"role": "user", "content": "Q=who is cooking? A=man P=man {'pred': 'yes'}"}]
    out = vqa.main(["--answers-file", str(answers), "--judgements", str(tmp_path / "judgements.jsonl"),
                    "--prompt-file", str(tmp_path / "prompt.json"), "--score-only"])
    assert (out["accuracy"], out["score"]) == (100.0, 3.0)
    with pytest.raises(ValueError, match="another prompt_sha"):  # the built-in prompt is another prompt
        vqa.main(["--answers-file", str(answers), "--judgements", str(tmp_path / "judgements.jsonl"), "--score-only"])
    (tmp_path / "bad.json").write_text(json.dumps({"system": "s", "user": "{question} {answer}"}))
    with pytest.raises(ValueError, match=r"lacks the placeholder\(s\) \{prediction\}"):
        vqa.load_prompt(str(tmp_path / "bad.json"))


def test_answers_without_ground_truth_or_missing_are_refused(tmp_path, answers):
    bad = write_answers(tmp_path / "nogt.jsonl", [{**ROWS[0], "answer": None}])
    with pytest.raises(ValueError, match=r"question v_a_0 has no ground-truth 'answer'.*--gt-answers-file"):
        vqa.read_answers(str(bad))
    (tmp_path / "q.json").write_text(json.dumps([{"question_id": q, "question": "?", "video_name": "v"}
                                                 for q in ("v_a_0", "v_a_1", "v_b_0", "v_c_0")]))
    items = vqa.read_answers(str(answers))
    vqa.check_coverage(items, str(tmp_path / "q.json"), 3)
    with pytest.raises(ValueError, match=r"1 of the 4 questions have no answer \(e.g. v_c_0\)"):
        vqa.check_coverage(items, str(tmp_path / "q.json"), None)


def test_video_llava_merge_format_is_read():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "merge.jsonl"
        path.write_text(json.dumps({"id": "v_x_0", "question": "what?", "answer": "dog", "pred": "a dog"}) + "\n")
        assert vqa.read_answers(str(path)) == [vqa.QAItem("v_x_0", "what?", "dog", "a dog")]


def test_rate_limiter_spaces_calls():
    now, slept = [0.0], []

    def sleep(s):
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(30, clock=lambda: now[0], sleep=sleep)  # one call every 2 s
    for _ in range(3):
        limiter.wait()
        now[0] += 0.5  # the request itself
    assert slept == [pytest.approx(1.5), pytest.approx(1.5)]
    with pytest.raises(ValueError, match="must be > 0"):
        RateLimiter(0)
