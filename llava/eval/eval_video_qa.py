"""Video-QA scorer (MSVD-QA, MSRVTT-QA, TGIF-QA, ActivityNet-QA): Video-LLaVA's GPT-judge protocol.

An OpenAI-compatible chat model judges each (question, ground-truth answer, prediction): is the
prediction a meaningful match (yes/no), and how good a match, as an integer 0-5; it replies with a
Python dictionary literal `{'pred': 'yes', 'score': 4}`. As in Video-LLaVA's
`videollava/eval/video/eval_video_qa.py` (PKU-YuanGroup/Video-LLaVA):
- accuracy = the judgements saying yes / the judgements saying yes or no (x100 here);
- score = the mean of the judged scores, each an int (`int(4.8)` = 4, as the original's `int()`).
The judge is gpt-3.5-turbo by default (the original's model name). The built-in instructions are
this project's own wording of the same request (the same fields, the same reply format);
`--prompt-file` takes another, e.g. the official text, as JSON `{"system": ..., "user": ...}` with
the placeholders {question} {answer} {prediction} in `user`.

What differs from the original, on purpose:
- temperature 0 (`--judge-temperature`; the original left the API default, 1.0), so a rerun asks
  the same way; a reply that is not a dictionary literal with 'pred' yes/no and an integer score in
  0..5 is asked again up to `--malformed-retries` times, then recorded as failed. The original
  retried such items without end. Failed items are counted in the summary (`failed`) and left out
  of accuracy and score; `accuracy_failed_as_no` and `score_failed_as_zero` count them against the
  model. They are never dropped silently;
- every judgement is appended to `--judgements` (jsonl) as it arrives, so an interrupted run
  resumes where it stopped (`--retry-failed` asks again for the failed ones);
- `--requests-per-minute` spaces the requests; HTTP 429/5xx and network errors are retried with
  back-off, and a refused key stops at once.

The key is read from the environment variable `--api-key-env` (default OPENAI_API_KEY) and is never
printed or written. With `--judge-base-url` (default OPENAI_BASE_URL, else OpenAI) any local
OpenAI-compatible server can judge; for a server without authentication the key may be unset.

  python -m llava.eval.eval_video_qa --benchmark msvd --answers-file answers.jsonl \\
      --judgements judgements.jsonl --save-json results/msvd/k13.json --k 13
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from llava.cli_errors import add_debug_arg, run_main
from llava.cli_help import HelpFormatter

from .answers_writer import _repair_tail
from .score_json import add_save_args, check_scorer_paths, save_from_args

DEFAULT_JUDGE = "gpt-3.5-turbo"
SYSTEM_PROMPT = (
    "You check answers to questions about videos. Decide whether a predicted answer means the same as the "
    "correct answer: judge the meaning, not the wording, and accept synonyms and paraphrases."
)
USER_PROMPT = (
    "A question about a video, its correct answer, and a predicted answer:\n\n"
    "Question: {question}\nCorrect answer: {answer}\nPredicted answer: {prediction}\n\n"
    "Does the prediction match the correct answer in meaning? Give 'yes' or 'no', and a match score as an "
    "integer from 0 (no match) to 5 (the best match). Reply with nothing but a Python dictionary literal with "
    "the keys 'pred' (the string 'yes' or 'no') and 'score' (an integer, not a string), for example "
    "{'pred': 'no', 'score': 1}."
)
PLACEHOLDERS = ("{question}", "{answer}", "{prediction}")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class Prompt:
    """The judge's system message and user template (placeholders {question} {answer} {prediction})."""

    system: str
    user: str

    @property
    def sha(self) -> str:
        """A short fingerprint, stored with each judgement so that two prompts are never mixed in one file."""
        return hashlib.sha1(json.dumps([self.system, self.user]).encode()).hexdigest()[:12]

    def messages(self, question: str, answer: str, prediction: str) -> list[dict]:
        user = self.user.replace("{question}", question).replace("{answer}", answer)
        user = user.replace("{prediction}", prediction)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


DEFAULT_PROMPT = Prompt(SYSTEM_PROMPT, USER_PROMPT)


def load_prompt(path: str | None) -> Prompt:
    """The built-in prompt, or the JSON file {"system": ..., "user": ...} given by --prompt-file."""
    if not path:
        return DEFAULT_PROMPT
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"--prompt-file {path}: not valid JSON ({err.msg}); expected "
                         '{"system": "...", "user": "... {question} {answer} {prediction} ..."}') from None
    if not isinstance(obj, dict) or not isinstance(obj.get("system"), str) or not isinstance(obj.get("user"), str):
        raise ValueError(f"--prompt-file {path}: expected an object with text fields 'system' and 'user'")
    missing = [p for p in PLACEHOLDERS if p not in obj["user"]]
    if missing:
        raise ValueError(f"--prompt-file {path}: the 'user' text lacks the placeholder(s) {', '.join(missing)}")
    return Prompt(obj["system"], obj["user"])


# ----------------------------------------------------------------------------- parsing a reply


def parse_judgement(reply: str) -> tuple[str, int] | None:
    """('yes' | 'no', score 0..5) from a judge reply, or None when the reply is malformed.

    The reply must be a dictionary literal (optionally inside a ``` fence) with 'pred' and 'score'.
    'pred' counts as yes when it contains "yes", else as no when it contains "no" (the original's
    rule); 'score' is a number or a numeric string, truncated to an int as the original's `int()`.
    """
    text = reply.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        obj = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("pred"), str) or "score" not in obj:
        return None
    pred = obj["pred"].lower()
    label = "yes" if "yes" in pred else "no" if "no" in pred else None
    raw = obj["score"]
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    try:
        score = int(float(raw))
    except (ValueError, OverflowError):
        return None
    if label is None or not 0 <= score <= 5 or (isinstance(raw, float) and not 0 <= raw <= 5):
        return None
    return label, score


# ----------------------------------------------------------------------------- items


@dataclass(frozen=True)
class QAItem:
    """One answered question: id, question text, ground truth and the model's prediction."""

    question_id: str
    question: str
    answer: str
    prediction: str


def read_answers(path: str) -> list[QAItem]:
    """QAItems from `model_video_qa`'s answers (jsonl: question_id, prompt, text, answer) or from
    Video-LLaVA's own merge.jsonl (id, question, answer, pred)."""
    from .io_utils import iter_jsonl

    items, seen = [], set()
    for n, row in enumerate(iter_jsonl(path), start=1):
        where = f"{path}:{n}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: not an answer record")
        qid = row.get("question_id", row.get("id"))
        question = row.get("prompt", row.get("question"))
        pred = row.get("text", row.get("pred"))
        if qid is None or question is None or pred is None:
            raise ValueError(f"{where}: expected {{question_id, prompt, text, answer}} (model_video_qa) or "
                             "{id, question, pred, answer} (Video-LLaVA)")
        if row.get("answer") is None:
            raise ValueError(f"{where}: question {qid} has no ground-truth 'answer'; answer with "
                             "model_video_qa --gt-answers-file so the records carry it")
        if str(qid) in seen:
            raise ValueError(f"{where}: question {qid} is answered twice; merge the answers with llava.eval.merge")
        seen.add(str(qid))
        items.append(QAItem(str(qid), str(question), str(row["answer"]), str(pred)))
    if not items:
        raise ValueError(f"{path}: no answers to judge")
    return items


def check_coverage(items: Sequence[QAItem], question_file: str, num_samples: int | None) -> None:
    """Every question of the question file (its first `num_samples`) has exactly one answer, and no other."""
    from .io_utils import read_json

    questions = read_json(question_file)
    if not isinstance(questions, list):
        raise ValueError(f"{question_file}: expected Video-LLaVA's question list")
    for i, q in enumerate(questions[:num_samples]):
        if not isinstance(q, dict) or "question_id" not in q:
            raise ValueError(f"{question_file}[{i}]: expected a question with a 'question_id' (Video-LLaVA's "
                             "question file); check --question-file")
    want = [str(q["question_id"]) for q in questions[:num_samples]]
    have = {it.question_id for it in items}
    missing = [q for q in want if q not in have]
    extra = sorted(have - set(want))
    if missing:
        raise ValueError(f"{len(missing)} of the {len(want)} questions have no answer (e.g. {missing[0]}); "
                         "finish the answers (rerun the driver) before judging")
    if extra:
        raise ValueError(f"{len(extra)} answer(s) belong to no question of {question_file} (e.g. {extra[0]})")


# ----------------------------------------------------------------------------- judgements file


def read_judgements(path: Path) -> dict[str, dict]:
    """The last judgement per question id in a judgements file (a killed run's partial line is cut)."""
    if not path.is_file():
        return {}
    _repair_tail(path)
    done: dict[str, dict] = {}
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                done[str(rec["question_id"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}:{n}: not a judgement record; remove the line or the file") from None
    return done


def check_judgement(rec: dict, item: QAItem, judge_model: str, prompt: Prompt, path: Path) -> None:
    """Refuse to reuse a judgement made for other texts, by another judge or with another prompt."""
    for name, want in (("question", item.question), ("answer", item.answer), ("prediction", item.prediction),
                       ("judge_model", judge_model), ("prompt_sha", prompt.sha)):
        if rec.get(name) != want:
            raise ValueError(f"{path}: the judgement of question {item.question_id} was made with another "
                             f"{name} ({str(rec.get(name))[:40]!r} vs {want[:40]!r}); use a new --judgements "
                             "file (or delete this one) to judge these answers")


def judge_item(endpoint, prompt: Prompt, item: QAItem, tries: int, max_tokens: int, temperature: float) -> dict:
    """Ask until the reply parses (at most `tries` times); the judgement record, status ok or failed."""
    replies = []
    parsed = None
    for _ in range(tries):
        reply = endpoint.chat(prompt.messages(item.question, item.answer, item.prediction),
                              max_tokens=max_tokens, temperature=temperature)
        replies.append(reply)
        parsed = parse_judgement(reply)
        if parsed is not None:
            break
    rec = {"question_id": item.question_id, "question": item.question, "answer": item.answer,
           "prediction": item.prediction, "judge_model": endpoint.model, "prompt_sha": prompt.sha,
           "status": "ok" if parsed else "failed", "pred": parsed[0] if parsed else None,
           "score": parsed[1] if parsed else None, "attempts": len(replies), "replies": replies}
    return rec


def judge_all(items: Sequence[QAItem], path: Path, endpoint, prompt: Prompt, tries: int = 3,
              retry_failed: bool = False, max_tokens: int = 64, temperature: float = 0.0,
              progress: bool = True) -> dict[str, dict]:
    """Judge every item not yet in `path`, appending each judgement as it arrives; returns item id -> judgement."""
    done = read_judgements(path)
    for item in items:
        if item.question_id in done:
            check_judgement(done[item.question_id], item, endpoint.model, prompt, path)
    todo = [it for it in items if it.question_id not in done
            or (retry_failed and done[it.question_id].get("status") != "ok")]
    if todo:
        from tqdm import tqdm

        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            for item in tqdm(todo, desc=f"judging {path.name}", unit="q", disable=not progress):
                rec = judge_item(endpoint, prompt, item, tries, max_tokens, temperature)
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
                done[item.question_id] = rec
    return {it.question_id: done[it.question_id] for it in items}


# ----------------------------------------------------------------------------- summary


def summarize_judgements(judgements: dict[str, dict]) -> dict:
    """Accuracy (% yes among yes/no) and mean score over the judged items, with every count."""
    ok = [j for j in judgements.values() if j.get("status") == "ok"]
    yes = sum(j["pred"] == "yes" for j in ok)
    total = len(judgements)
    failed = total - len(ok)
    score_sum = sum(int(j["score"]) for j in ok)
    return {
        "accuracy": 100.0 * yes / len(ok) if ok else 0.0,
        "score": score_sum / len(ok) if ok else 0.0,
        "total": total, "judged": len(ok), "failed": failed, "yes": yes, "no": len(ok) - yes,
        "accuracy_failed_as_no": 100.0 * yes / total if total else 0.0,
        "score_failed_as_zero": score_sum / total if total else 0.0,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--answers-file", required=True, help="model_video_qa answers (jsonl) with ground truth")
    parser.add_argument("--judgements", required=True, help="jsonl the judgements are appended to (resumable)")
    parser.add_argument("--benchmark", default=None,
                        help="msvd, msrvtt, tgif or activitynet (names the record's column)")
    parser.add_argument("--question-file", default=None,
                        help="the question file answered: check that every question (first --num-samples) has an answer")
    parser.add_argument("--num-samples", type=int, default=None, help="with --question-file: its first N questions")
    judge = parser.add_argument_group("judge")
    judge.add_argument("--judge-model", default=DEFAULT_JUDGE, help="chat model (Video-LLaVA: gpt-3.5-turbo)")
    judge.add_argument("--judge-base-url", default=None,
                       help="OpenAI-compatible endpoint ending in /v1 (default: OPENAI_BASE_URL, else OpenAI)")
    judge.add_argument("--api-key-env", default="OPENAI_API_KEY",
                       help="environment variable holding the key (optional for a custom --judge-base-url)")
    judge.add_argument("--requests-per-minute", type=float, default=None, help="space requests to this rate")
    judge.add_argument("--malformed-retries", type=int, default=2,
                       help="ask again this many times when a reply does not parse; then the item is failed")
    judge.add_argument("--http-retries", type=int, default=5, help="tries per request on 429/5xx/network errors")
    judge.add_argument("--retry-backoff", type=float, default=2.0, help="seconds before the first HTTP retry")
    judge.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    judge.add_argument("--judge-temperature", type=float, default=0.0, help="sampling temperature of the judge")
    judge.add_argument("--judge-max-tokens", type=int, default=64, help="reply length limit")
    judge.add_argument("--prompt-file", default=None,
                       help='JSON {"system": ..., "user": ...} replacing the built-in instructions (e.g. the official text)')
    judge.add_argument("--retry-failed", action="store_true", help="ask again for items recorded as failed")
    judge.add_argument("--score-only", action="store_true",
                       help="send nothing: summarise the judgements already in --judgements (all must be there)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_save_args(parser, "")
    add_debug_arg(parser)
    return parser


def column_of(benchmark: str | None) -> str:
    """The video table column of a benchmark name or alias ("msvd" -> "MSVD-QA"); unknown names as given."""
    if not benchmark:
        return "video-qa"
    from llava.eval import catalogue

    record = catalogue.find(benchmark)
    return record.columns[0] if record is not None else benchmark


def check_judge_args(args: argparse.Namespace) -> None:
    """The flags' own checks, before any file is read or any request is sent."""
    from urllib.parse import urlsplit

    for flag, path in (("--answers-file", args.answers_file), ("--question-file", args.question_file),
                       ("--prompt-file", args.prompt_file)):
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"{flag} {path} not found")
    if args.num_samples is not None and (args.num_samples < 1 or not args.question_file):
        raise ValueError(f"--num-samples {args.num_samples}: give a count >= 1, together with the --question-file "
                         "whose first N questions were answered")
    for flag, value, low in (("--malformed-retries", args.malformed_retries, 0), ("--http-retries", args.http_retries, 1),
                             ("--judge-max-tokens", args.judge_max_tokens, 1)):
        if value < low:
            raise ValueError(f"{flag} must be >= {low}, got {value}")
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.judge_base_url is not None:
        url = urlsplit(args.judge_base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"--judge-base-url {args.judge_base_url!r}: expected an http(s) URL of an "
                             "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")


def main(argv: Sequence[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if not args.benchmark_name:
        args.benchmark_name = column_of(args.benchmark)
    check_scorer_paths(args)
    if Path(args.judgements).resolve() == Path(args.answers_file).resolve():
        raise ValueError("--judgements must not be the --answers-file")
    check_judge_args(args)
    items = read_answers(args.answers_file)
    if args.question_file:
        check_coverage(items, args.question_file, args.num_samples)
    prompt = load_prompt(args.prompt_file)
    path = Path(args.judgements)
    if args.score_only:
        done = read_judgements(path)
        missing = [it.question_id for it in items if it.question_id not in done]
        if missing:
            raise ValueError(f"{path}: {len(missing)} of {len(items)} answers are not judged (e.g. {missing[0]}); "
                             "run without --score-only to judge them")
        for it in items:
            check_judgement(done[it.question_id], it, args.judge_model, prompt, path)
        judgements = {it.question_id: done[it.question_id] for it in items}
    else:
        from .judge_client import ChatEndpoint, RateLimiter, default_base_url

        base_url = args.judge_base_url or default_base_url()
        endpoint = ChatEndpoint(model=args.judge_model, base_url=base_url, key_env=args.api_key_env,
                                key_required=base_url.rstrip("/") == "https://api.openai.com/v1",
                                retries=args.http_retries, timeout=args.timeout, backoff=args.retry_backoff,
                                limiter=RateLimiter(args.requests_per_minute))
        endpoint.check_key()
        judgements = judge_all(items, path, endpoint, prompt, tries=1 + args.malformed_retries,
                               retry_failed=args.retry_failed, max_tokens=args.judge_max_tokens,
                               temperature=args.judge_temperature, progress=not args.no_progress)
    result = summarize_judgements(judgements)
    print(f"{args.benchmark_name}: accuracy {result['accuracy']:.2f}  score {result['score']:.3f}  "
          f"(judged {result['judged']}, failed {result['failed']}, of {result['total']}; judge {args.judge_model})")
    if result["failed"]:
        print(f"warning: {result['failed']} judge repl{'y' if result['failed'] == 1 else 'ies'} never parsed; "
              f"left out of accuracy and score (see 'failed' in {path}; --retry-failed asks again). Counted "
              f"against the model: accuracy {result['accuracy_failed_as_no']:.2f}, score "
              f"{result['score_failed_as_zero']:.3f}", file=sys.stderr)
    save_from_args(args, {**result, "judge_model": args.judge_model, "prompt_sha": prompt.sha}, result["accuracy"])
    return result


if __name__ == "__main__":
    run_main(main)
