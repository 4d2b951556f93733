"""The `--save-json` score record that every scorer CLI can write and `llava.eval.summarize` reads.

Record: `{"benchmark": name, "k": K or null, "metrics": {...}, "headline": float}`.
`benchmark` is the paper-table column name (e.g. "POPE", "SQA-IMG"); `k` is the number of visual
tokens kept (null means no pruning, which the summariser treats as the baseline K). Suggested
layout: `RESULTS_DIR/<bench>/k<K>/score.json`; the summariser reads K from the record, not the path.

When the scored answers carry the run's metadata (every driver writes it), the record also holds
`method`, `method_args`, and the means over the answers with images of `visual_tokens` (entering the
LLM) and `layer_averaged_visual_tokens` (FLOPs-equivalent): what `summarize --align layer-averaged`
lines methods up by. The answers are the scorer's own answers input, or `--run-answers` for scorers
that read a grade or review file (MM-Vet, LLaVA-Bench).
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
    group.add_argument("--run-answers", default=None,
                       help="answers jsonl whose metadata gives the record's method and layer-averaged visual "
                            "tokens (default: the scorer's answers input, when it is a jsonl)")


SCORER_INPUTS = ("result_file", "answers_file", "annotation_file", "question_file", "questions", "grade_file", "run_answers",
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


def score_record(benchmark: str, metrics: dict[str, Any], headline: float, k: int | None = None,
                 run: dict | None = None) -> dict:
    """The record written by `--save-json`; `run` (from `run_accounting`) adds the method and token counts."""
    return {"benchmark": benchmark, "k": k, "metrics": metrics, "headline": float(headline), **(run or {})}


def _mean_of(values: list) -> float | None:
    """Mean over answers of a per-answer value (a number, or a list for several images; [] = no image)."""
    flat = [float(x) for v in values for x in (v if isinstance(v, list) else [v]) if x is not None]
    return sum(flat) / len(flat) if flat else None


def run_accounting(answers: str | Path) -> dict | None:
    """The method and visual-token counts of the run that wrote `answers` (a jsonl), or None without metadata.

    Returns {"method", "method_args", "visual_tokens", "layer_averaged_visual_tokens"}: the last two are
    means over the answers that saw images; an answer from before layer-averaged tokens were recorded
    counts its entering tokens (exact for pre-LLM methods).
    """
    import json

    path = Path(answers)
    if path.suffix != ".jsonl" or not path.is_file():
        return None
    metas = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                meta = json.loads(line).get("metadata")
            except (json.JSONDecodeError, AttributeError):
                raise ValueError(f"{path}: line {n} is not a JSON answer record") from None
            if isinstance(meta, dict):
                metas.append(meta)
    if not metas:
        return None
    methods = {m.get("pruning_method") for m in metas}
    if len(methods) > 1:
        raise ValueError(f"{path}: answers of several methods ({sorted(map(str, methods))}); score one run at a time")
    layer_avg = [m.get("layer_averaged_visual_tokens", m.get("visual_tokens")) for m in metas]
    return {"method": metas[0].get("pruning_method"), "method_args": metas[0].get("pruning_args") or {},
            "visual_tokens": _mean_of([m.get("visual_tokens") for m in metas]),
            "layer_averaged_visual_tokens": _mean_of(layer_avg)}


def _answers_input(args: argparse.Namespace) -> str | None:
    explicit = getattr(args, "run_answers", None)
    if explicit:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"--run-answers {explicit}: no such answers file")
        return explicit
    for name in ("result_file", "answers_file", "src"):
        value = getattr(args, name, None)
        if isinstance(value, str) and value.endswith(".jsonl"):
            return value
    return None


def save_from_args(args: argparse.Namespace, metrics: dict[str, Any], headline: float) -> Path | None:
    """Write the record if `--save-json` was given; return its path (or None)."""
    if not getattr(args, "save_json", None):
        return None
    path = Path(args.save_json)
    answers = _answers_input(args)
    run = run_accounting(answers) if answers else None
    write_json(path, score_record(args.benchmark_name, metrics, headline, args.k, run))
    print(f"saved score record to {path}")
    return path
