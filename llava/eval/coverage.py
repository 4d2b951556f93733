"""Do the predictions cover the benchmark? One check shared by every scorer.

A score over a partial answers file looks like a real result, so a scorer first compares the ids it
was given with the ids the benchmark expects. Missing and extra predictions are reported by count
with the first few ids; the scorer refuses to score unless `--allow-incomplete` was passed, and then
warns (on stderr) and scores what is there.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

from llava.cli_errors import add_debug_arg

SHOWN = 5  # ids listed in a message


def add_incomplete_arg(parser: argparse.ArgumentParser) -> None:
    """`--allow-incomplete`: score even when predictions are missing or extra (with a warning).

    Every scorer calls it, so it also declares the scorers' `--debug` (see `llava.cli_errors`).
    """
    add_debug_arg(parser)
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="score even if some questions have no prediction or some predictions match no "
                             "question (reported on stderr; such a score is not comparable to published ones)")


@dataclass
class Coverage:
    """How the predicted ids compare with the expected ones (ids in their files' order)."""

    expected: int
    missing: list = field(default_factory=list)
    extra: list = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.missing and not self.extra

    def describe(self, source: str, reference: str) -> str:
        """`<source>: 3 of 10 questions in <reference> have no prediction (first: ...); ...`."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} of {self.expected} questions in {reference} have no prediction "
                         f"(first: {_first(self.missing)})")
        if self.extra:
            parts.append(f"{len(self.extra)} predictions match no question in {reference} "
                         f"(first: {_first(self.extra)})")
        return f"{source}: " + "; ".join(parts)


def _first(ids: list) -> str:
    shown = ", ".join(repr(i) for i in ids[:SHOWN])
    return shown + (", ..." if len(ids) > SHOWN else "")


def _ordered_unique(ids: Iterable[Any]) -> list[str]:
    return list(dict.fromkeys(str(i) for i in ids))


def check_coverage(expected: Iterable[Any], predicted: Iterable[Any], *, source: str, reference: str,
                   allow_incomplete: bool = False, known: Iterable[Any] | None = None) -> Coverage:
    """Compare predicted ids with expected ids (compared as strings, so 12 matches "12").

    `known` (default: `expected`) are the ids a prediction may carry without being extra, e.g. all
    GQA testdev questions while only the balanced ones are scored. Incomplete coverage is a
    ValueError unless `allow_incomplete`, which prints the report as a warning instead.
    """
    expected_ids = _ordered_unique(expected)
    predicted_ids = _ordered_unique(predicted)
    have, valid = set(predicted_ids), set(expected_ids) if known is None else set(_ordered_unique(known))
    cov = Coverage(len(expected_ids), [i for i in expected_ids if i not in have],
                   [i for i in predicted_ids if i not in valid])
    if cov.complete:
        return cov
    text = cov.describe(str(source), str(reference))
    if not allow_incomplete:
        raise ValueError(f"{text}; no score over an incomplete set: answer every question, "
                         "or pass --allow-incomplete to score what is there")
    print(f"warning: {text}; scoring what is there (--allow-incomplete)", file=sys.stderr)
    return cov
