"""TextVQA val scorer: match answers to TextVQA_0.5.1_val.json by (image id, question) and report VQA accuracy."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

from .io_utils import PathLike, load_answers, read_json
from .score_json import add_save_args, save_from_args
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


def evaluate_textvqa(annotation_file: PathLike, result_file: PathLike) -> dict:
    """`{samples, accuracy}` (accuracy in percent); an answer without annotation raises ValueError."""
    annotations = load_annotations(annotation_file)
    scores = []
    for ans in load_answers(result_file, required=("prompt",)):
        key = (str(ans["question_id"]), question_from_prompt(ans["prompt"]))
        if key not in annotations:
            raise ValueError(f"question {ans['question_id']}: no annotation for image {key[0]} with question "
                             f"{key[1]!r} in {annotation_file}; is it the TextVQA val file?")
        scores.append(vqa_accuracy(ans["text"], annotations[key]))
    if not scores:
        raise ValueError(f"{result_file}: no answers to score")
    return {"samples": len(scores), "accuracy": 100 * sum(scores) / len(scores)}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl")
    add_save_args(parser, "TextVQA")
    args = parser.parse_args(argv)
    result = evaluate_textvqa(args.annotation_file, args.result_file)
    print(Path(args.result_file).stem)
    print(f"Samples: {result['samples']}\nAccuracy: {result['accuracy']:.2f}%")
    save_from_args(args, result, result["accuracy"])
    return result


if __name__ == "__main__":
    main()
