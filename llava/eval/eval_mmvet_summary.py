"""MM-Vet: totals of a GPT-4 grade file (per run and their mean), optionally per capability.

Grade file: `{"v1_<id>": {"model": [...], "content": [...], "score": [s_run1, s_run2, ...]}}`, scores in
[0, 1]. Per run, total = 100 * mean score over samples; the reported total is the mean of the run
totals, and std is their population standard deviation.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import read_json
from .score_json import add_save_args, check_scorer_paths, save_from_args


def run_scores(grades: dict) -> list[list[float]]:
    """Scores as `[run][sample]`; every sample must have the same number of runs."""
    if not grades:
        raise ValueError("grade file has no samples")
    counts = {len(g["score"]) for g in grades.values()}
    if len(counts) != 1:
        short = min(grades, key=lambda s: len(grades[s]["score"]))
        raise ValueError(f"sample {short}: {len(grades[short]['score'])} graded runs, others have {max(counts)}; "
                         "re-run the grader for the missing runs")
    return [[float(g["score"][r]) for g in grades.values()] for r in range(counts.pop())]


def summarize_grades(grades: dict, capabilities: dict[str, list[str]] | None = None) -> dict:
    """`{runs: [...], total, std, samples}` and, with a capability map, per-capability means (mean of runs)."""
    runs = [100 * sum(r) / len(r) for r in run_scores(grades)]
    out = {"samples": len(grades), "runs": runs, "total": sum(runs) / len(runs), "std": statistics.pstdev(runs)}
    if capabilities:
        out["capabilities"] = capability_scores(grades, capabilities)
    return out


def capability_scores(grades: dict, capabilities: dict[str, list[str]]) -> dict[str, float]:
    """Mean (over runs and samples) score x100 of the samples that need each capability."""
    per: dict[str, list[float]] = {}
    for sample, g in grades.items():
        if sample not in capabilities:
            raise ValueError(f"sample {sample}: not in the capability map (mm-vet.json)")
        mean = sum(g["score"]) / len(g["score"])
        for cap in capabilities[sample]:
            per.setdefault(cap, []).append(mean)
    return {cap: 100 * sum(v) / len(v) for cap, v in sorted(per.items())}


def load_capabilities(path: str) -> dict[str, list[str]]:
    """`{sample: [capabilities]}` from MM-Vet's mm-vet.json (`{v1_0: {capability: [...], ...}}`)."""
    return {k: list(v["capability"]) for k, v in read_json(path).items()}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--grade-file", required=True, help="<model>_gpt-4-grade-<n>runs.json")
    parser.add_argument("--mmvet-json", default=None, help="MM-Vet's mm-vet.json, for per-capability scores")
    add_incomplete_arg(parser)
    add_save_args(parser, "MM-Vet")
    args = parser.parse_args(argv)
    check_scorer_paths(args)
    caps = load_capabilities(args.mmvet_json) if args.mmvet_json else None
    grades = read_json(args.grade_file)
    if caps is not None:
        check_coverage(caps, grades, source=args.grade_file, reference=args.mmvet_json,
                       allow_incomplete=args.allow_incomplete)
        grades = {sample: g for sample, g in grades.items() if sample in caps}
    result = summarize_grades(grades, caps)
    for cap, score in result.get("capabilities", {}).items():
        print(f"{cap}: {score:.1f}")
    print(f"runs: {[round(r, 1) for r in result['runs']]}")
    print(f"total: {result['total']:.1f}  std: {result['std']:.1f}  ({result['samples']} samples)")
    save_from_args(args, {k: v for k, v in result.items() if k != "capabilities"}, result["total"])
    return result


if __name__ == "__main__":
    run_main(main)
