"""TextVQA val scorer: match answers to TextVQA_0.5.1_val.json by (image id, question) and report VQA accuracy."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import PathLike, load_answers, read_json
from .score_json import add_save_args, check_scorer_paths, save_from_args
from .vqa_metric import vqa_accuracy

OCR_LINE_PREFIX = "Reference OCR token:"
# Older prompt style: "OCR tokens: ... Question: <q> Short answer:".
LEGACY_PROMPT = re.compile(r"Question: (.*?) Short answer:", re.DOTALL)


def question_from_prompt(prompt: str) -> str:
    """The lower-cased question of a LLaVA TextVQA prompt.

    It is the first line that is not a "Reference OCR token: ..." line (LLaVA puts the OCR tokens
    after the question); the old "OCR tokens: ... Question: q Short answer:" style is also read.
    """
    if prompt.startswith("OCR tokens: "):
        match = LEGACY_PROMPT.search(prompt)
        if match is None:
            raise ValueError(f"prompt {prompt[:60]!r}...: 'OCR tokens:' prompt without 'Question: ... Short answer:'")
        return match.group(1).lower()
    lines = [ln for ln in prompt.split("\n") if not ln.startswith(OCR_LINE_PREFIX)]
    return lines[0].lower() if lines else ""


def load_annotations(path: PathLike) -> dict[tuple[str, str], list[str]]:
    """`(image_id, lower-cased question) -> answers` from a TextVQA json (`{"data": [...]}`)."""
    doc = read_json(path)
    data = doc["data"] if isinstance(doc, dict) else doc
    return {(str(a["image_id"]), a["question"].lower()): list(a["answers"]) for a in data}


def evaluate_textvqa(annotation_file: PathLike, result_file: PathLike, allow_incomplete: bool = False) -> dict:
    """`{samples, accuracy}` (accuracy in percent) over the answers.

    Answers and annotated questions are matched by (image id, question); an unanswered question or
    an answer without annotation is refused (`check_coverage`), unless `allow_incomplete`.
    """
    annotations = load_annotations(annotation_file)
    answers = load_answers(result_file, required=("prompt",))
    keys = [(str(a["question_id"]), question_from_prompt(a["prompt"])) for a in answers]
    check_coverage((f"{img}: {q}" for img, q in annotations), (f"{img}: {q}" for img, q in keys),
                   source=result_file, reference=annotation_file, allow_incomplete=allow_incomplete)
    scores = [vqa_accuracy(ans["text"], annotations[key]) for ans, key in zip(answers, keys) if key in annotations]
    if not scores:
        raise ValueError(f"{result_file}: no answers to score")
    return {"samples": len(scores), "accuracy": 100 * sum(scores) / len(scores)}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl")
    add_incomplete_arg(parser)
    add_save_args(parser, "TextVQA")
    args = parser.parse_args(argv)
    check_scorer_paths(args)
    result = evaluate_textvqa(args.annotation_file, args.result_file, args.allow_incomplete)
    print(Path(args.result_file).stem)
    print(f"Samples: {result['samples']}\nAccuracy: {result['accuracy']:.2f}%")
    save_from_args(args, result, result["accuracy"])
    return result


if __name__ == "__main__":
    run_main(main)
