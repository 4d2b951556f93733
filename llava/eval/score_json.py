"""The `--save-json` score record that every scorer CLI can write and `llava.eval.summarize` reads.

Record: `{"benchmark": name, "k": K or null, "metrics": {...}, "headline": float}`.
`benchmark` is the paper-table column name (e.g. "POPE", "SQA-IMG"); `k` is the number of visual
tokens kept (null means no pruning, which the summariser treats as the baseline K). Suggested
layout: `RESULTS_DIR/<bench>/k<K>/score.json`; the summariser reads K from the record, not the path.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .io_utils import write_json


def add_save_args(parser: argparse.ArgumentParser, benchmark: str) -> None:
    """Add `--save-json PATH`, `--k K` and `--benchmark-name NAME` (default `benchmark`) to a scorer CLI."""
    group = parser.add_argument_group("score record (for llava.eval.summarize)")
    group.add_argument("--save-json", default=None, help="write the headline metrics to this JSON file")
    group.add_argument("--k", type=int, default=None, help="visual tokens kept in this run (omit for unpruned)")
    group.add_argument("--benchmark-name", default=benchmark,
                       help=f"column name in the paper table (default: {benchmark or 'from --benchmark'})")


SCORER_INPUTS = ("result_file", "answers_file", "annotation_file", "question_file", "questions", "grade_file",
                 "mmvet_json", "gt")
SCORER_OUTPUTS = ("save_json", "prediction_file", "output_file", "output_result", "result_upload_file", "upload_file")


def check_scorer_paths(args: argparse.Namespace) -> None:
    """Refuse a scorer output (--save-json, --prediction-file, ...) that is one of its input files."""
    from .cli_args import check_outputs

    inputs = {_flag(n): getattr(args, n) for n in SCORER_INPUTS if getattr(args, n, None)}
    outputs = [(_flag(n), getattr(args, n)) for n in SCORER_OUTPUTS if getattr(args, n, None)]
    check_outputs(outputs, inputs)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def score_record(benchmark: str, metrics: dict[str, Any], headline: float, k: int | None = None) -> dict:
    """The record written by `--save-json`."""
    return {"benchmark": benchmark, "k": k, "metrics": metrics, "headline": float(headline)}


def save_from_args(args: argparse.Namespace, metrics: dict[str, Any], headline: float) -> Path | None:
    """Write the record if `--save-json` was given; return its path (or None)."""
    if not getattr(args, "save_json", None):
        return None
    path = Path(args.save_json)
    write_json(path, score_record(args.benchmark_name, metrics, headline, args.k))
    print(f"saved score record to {path}")
    return path
