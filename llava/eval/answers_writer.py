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


def answer_key(question_id, prompt) -> tuple[str, str]:
    """The identity of a question in an answers file."""
    return str(question_id), str(prompt)


def answered_ids(path: str | Path) -> set[tuple[str, str]]:
    """(question_id, prompt) keys already in an answers file; empty when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return set()
    done = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                done.add(answer_key(record["question_id"], record.get("prompt", "")))
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{path}:{lineno}: not an answer record ({err}); remove the line or the file") from None
    return done


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
