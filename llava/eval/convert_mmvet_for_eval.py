"""MM-Vet: convert a LLaVA answers jsonl into the grader's input `{"v1_<question_id>": answer text}`."""

from __future__ import annotations

import argparse
from typing import Sequence

from .io_utils import load_answers, write_json

SAMPLE_PREFIX = "v1_"


def to_mmvet_results(answers: Sequence[dict]) -> dict[str, str]:
    """`{v1_<id>: text}` in answer-file order; a repeated id raises ValueError."""
    out: dict[str, str] = {}
    for ans in answers:
        key = f"{SAMPLE_PREFIX}{ans['question_id']}"
        if key in out:
            raise ValueError(f"question {ans['question_id']}: answered twice; remove the duplicate")
        out[key] = ans["text"]
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", required=True, help="answers jsonl")
    parser.add_argument("--dst", required=True, help="output JSON for the MM-Vet grader")
    args = parser.parse_args(argv)
    results = to_mmvet_results(load_answers(args.src))
    write_json(args.dst, results)
    print(f"wrote {len(results)} MM-Vet answers to {args.dst}")
    return results


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
