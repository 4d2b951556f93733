"""Shared file helpers for the scorers: JSON / JSON-lines reading and writing, answer loading."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

PathLike = str | Path


def iter_jsonl(path: PathLike) -> Iterator[dict]:
    """Yield the objects of a JSON-lines file, skipping blank lines.

    A malformed line raises a ValueError that names the file and the 1-based line number.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path}:{lineno}: not valid JSON ({err.msg}); fix or remove this line"
                ) from None


def read_jsonl(path: PathLike) -> list[dict]:
    """All objects of a JSON-lines file (see `iter_jsonl`)."""
    return list(iter_jsonl(path))


def read_json(path: PathLike) -> Any:
    """A whole JSON document; a parse error names the file, line and column."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None


def write_json(path: PathLike, obj: Any, indent: int | None = 2) -> None:
    """Write `obj` as JSON (json module defaults, so non-ASCII is escaped), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)


def write_jsonl(path: PathLike, rows: Iterable[dict]) -> None:
    """Write one JSON object per line, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def qid_key(question_id: Any) -> str:
    """A question id as a lookup key, so that 12 and "12" match across files."""
    return str(question_id)


def index_by_qid(records: Iterable[dict], source: PathLike = "<records>", field: str = "question_id") -> dict[str, dict]:
    """Map `qid_key(record[field])` -> record; a missing field or a duplicate id raises ValueError."""
    out: dict[str, dict] = {}
    for n, rec in enumerate(records, start=1):
        if field not in rec:
            raise ValueError(f"{source}: record {n} has no {field!r} field")
        key = qid_key(rec[field])
        if key in out:
            raise ValueError(f"{source}: {field} {rec[field]!r} appears twice; remove the duplicate answer")
        out[key] = rec
    return out


def load_answers(path: PathLike, required: Sequence[str] = ()) -> list[dict]:
    """A LLaVA answer file (`{question_id, prompt, text, ...}` per line).

    Every line must have `question_id`, `text` and the `required` fields (e.g. "prompt").
    """
    answers = read_jsonl(path)
    fields = ("question_id", "text", *required)
    for n, ans in enumerate(answers, start=1):
        if not isinstance(ans, dict):
            raise ValueError(f"{path}: answer {n} is a JSON {type(ans).__name__}, not an object "
                             "{question_id, prompt, text, ...}; is this a LLaVA answer file?")
        missing = [k for k in fields if k not in ans]
        if missing:
            raise ValueError(f"{path}: answer {n} lacks {', '.join(missing)}; is this a LLaVA answer file?")
        if not isinstance(ans["text"], str):
            raise ValueError(f"{path}: answer {n} (question {ans['question_id']}) has a non-string text "
                             f"{ans['text']!r}; is this a LLaVA answer file?")
    return answers
