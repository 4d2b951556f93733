"""Incremental, resumable answers files (LLaVA's jsonl answer format).

Each answer is one line written with a single `write` and flushed, so a killed run leaves at most
one partial last line. On reopening, a partial last line is cut away (it never reaches a scorer)
and the questions already answered are skipped.

A question is identified by (question_id, prompt): LLaVA's own MME and TextVQA question files reuse
one question_id for several questions about the same image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _repair_tail(path: Path) -> None:
    """Drop a trailing partial line (no final newline, or not valid JSON) left by a killed run."""
    data = path.read_bytes()
    if not data:
        return
    end = len(data)
    if not data.endswith(b"\n"):
        end = data.rfind(b"\n") + 1
    else:
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        try:
            json.loads(data[last_start:])
        except json.JSONDecodeError:
            end = last_start
    if end != len(data):
        with path.open("r+b") as f:
            f.truncate(end)


def _is_partial(last_line: str) -> bool:
    """A last line `_repair_tail` would cut: no final newline, or not valid JSON."""
    if not last_line.endswith("\n"):
        return True
    try:
        json.loads(last_line)
    except json.JSONDecodeError:
        return True
    return False


def answer_key(question_id, prompt) -> tuple[str, str]:
    """The identity of a question in an answers file."""
    return str(question_id), str(prompt)


def answered_ids(path: str | Path, skip_partial_tail: bool = False) -> set[tuple[str, str]]:
    """(question_id, prompt) keys already in an answers file; empty when the file does not exist.

    `skip_partial_tail` ignores a killed run's partial last line instead of refusing it, so the file
    can be read without being repaired (what `AnswerWriter` does on opening).
    """
    path = Path(path)
    if not path.exists():
        return set()
    done = set()
    with path.open(encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or (skip_partial_tail and lineno == len(lines) and _is_partial(line)):
            continue
        try:
            record = json.loads(line)
            done.add(answer_key(record["question_id"], record.get("prompt", "")))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{lineno}: not an answer record ({err}); remove the line or the file") from None
    return done


# What an answer records about the run that wrote it: `model_id` at the top level, the rest in
# `metadata`. Resuming with any of them changed would mix two runs in one file.
RUN_FIELDS = ("model_id", "visual_token_num", "visual_token_ratio", "pruning_method", "pruning_args", "conv_mode",
              "dtype", "anyres_mode", "position_mode")
_ABSENT = object()


def _run_field(record: dict, name: str):
    if name == "model_id":
        return record.get("model_id", _ABSENT)
    meta = record.get("metadata")
    if name == "visual_token_ratio" and isinstance(meta, dict) and "visual_token_num" in meta:
        return meta.get(name)  # a driver's record without a ratio was written without one (None)
    return meta.get(name, _ABSENT) if isinstance(meta, dict) else _ABSENT


def _shown(value) -> str:
    if value is None:
        return "None"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def check_resume(path: str | Path, expected: dict) -> None:
    """Refuse to resume into `path` if a record was written by a different run.

    `expected` maps RUN_FIELDS names to this run's values; a field a record lacks is not compared,
    and a trailing partial line (a killed run) is ignored. Reads only: nothing is written.
    """
    path = Path(path)
    if not path.is_file():
        return
    want = {k: json.loads(json.dumps(v)) for k, v in expected.items() if k in RUN_FIELDS}  # as JSON stores it
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a killed run's partial line, or a bad one that answered_ids reports
            if not isinstance(record, dict):
                continue
            for name, value in want.items():
                have = _run_field(record, name)
                if have is not _ABSENT and have != value:
                    raise ValueError(f"answers file {path} was written with {name}={_shown(have)}, this run asks "
                                     f"for {_shown(value)}; use a new --answers-file or --no-resume")


class AnswerWriter:
    """Appends answer records one line at a time; `resume=False` starts the file afresh."""

    def __init__(self, path: str | Path, resume: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            _repair_tail(self.path)
        elif self.path.exists():
            self.path.unlink()
        self.done = answered_ids(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def __contains__(self, key: tuple) -> bool:
        return answer_key(*key) in self.done

    def write(self, record: dict) -> None:
        key = answer_key(record["question_id"], record.get("prompt", ""))
        if key in self.done:
            raise ValueError(f"question {key[0]} ({key[1][:40]!r}) is already answered in {self.path}")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.add(key)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AnswerWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
