"""Reading question files row by row, so that a bad row is refused naming its file and line.

Torch-free: the drivers read and check every question before the model is imported or loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

JSONL_EXAMPLE = '{"question_id": 1, "image": "a.jpg", "text": "What is shown?"}'


def _kind(value) -> str:
    """A JSON value's kind as JSON calls it: object, array, string, number, true/false, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), "a number")


def check_not_empty(path: str | Path, text: str, what: str = "question file") -> None:
    """An empty (or blank) file is an error naming it."""
    if not text.strip():
        raise ValueError(f"{path}: the {what} is empty (no questions); check --question-file")


def check_file_not_empty(path: str | Path, what: str = "question file") -> None:
    """`check_not_empty` on a file, reading at most its first 64 KiB (MMBench TSVs are large)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        head = f.read(1 << 16)
    if len(head) < (1 << 16):
        check_not_empty(path, head, what)


def read_jsonl_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, row) for every non-blank line of a JSON-lines question file.

    Bad JSON, a row that is not a JSON object, and an empty file are ValueErrors naming the file
    and the line and saying what was expected.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    check_not_empty(path, text)
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg} at column {err.colno}); expected one "
                             f"JSON object per line, like {JSONL_EXAMPLE}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object like {JSONL_EXAMPLE}, got {_kind(row)}")
        rows.append((lineno, row))
    return rows


def check_question_rows(rows: Iterable[tuple[int, dict]], path: str | Path, require_image: bool) -> None:
    """Every row has a question_id and a string `text`; with `require_image`, a non-empty `image` too."""
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        if row.get("question_id") is None:
            raise ValueError(f"{where}: the question has no 'question_id'; expected a row like {JSONL_EXAMPLE}")
        qid = row["question_id"]
        if "text" not in row:
            raise ValueError(f"{where}: question {qid} has no 'text' field")
        if not isinstance(row["text"], str):
            raise ValueError(f"{where}: question {qid} has 'text' {_kind(row['text'])}; expected a string")
        if require_image:
            image = row.get("image")
            if not image:
                raise ValueError(f"{where}: question {qid} has no 'image'; every question of this benchmark has "
                                 "an image (fix the row, or check that --question-file is the right file)")
            if not isinstance(image, str):
                raise ValueError(f"{where}: question {qid} has 'image' {_kind(image)}; expected a file name")
