"""Incremental, resumable answers files (LLaVA's jsonl answer format).

Each answer is one line written with a single `write` and flushed, so a killed run leaves at most
one partial last line. On reopening, a partial last line is cut away (it never reaches a scorer)
and the question_ids already answered are skipped.
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


def answered_ids(path: str | Path) -> set[str]:
    """question_ids (as strings) already in an answers file; empty when the file does not exist."""
    path = Path(path)
    if not path.exists():
        return set()
    done = set()
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                done.add(str(json.loads(line)["question_id"]))
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

    def __contains__(self, question_id) -> bool:
        return str(question_id) in self.done

    def write(self, record: dict) -> None:
        qid = str(record["question_id"])
        if qid in self.done:
            raise ValueError(f"question {qid} is already answered in {self.path}")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.add(qid)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "AnswerWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
