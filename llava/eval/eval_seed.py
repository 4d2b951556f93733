"""SEED-Bench: accuracy per question type, on image / video questions, and the upload `{question_id, prediction}` jsonl."""

from __future__ import annotations

import argparse
from typing import Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import load_answers, qid_key, read_json, write_jsonl
from .score_json import add_save_args, check_scorer_paths, save_from_args


def group_answers(answers: Sequence[dict]) -> dict[str, list[dict]]:
    """question id -> its answers in file order (SEED-Bench.json repeats at least one question id)."""
    out: dict[str, list[dict]] = {}
    for ans in answers:
        out.setdefault(qid_key(ans["question_id"]), []).append(ans)
    return out


def match_answers(annotation: dict, answers: dict[str, list[dict]]) -> list[dict | None]:
    """The answer of each annotation question (None if absent); the n-th question with a repeated id
    gets the n-th answer with that id, or the last one when there are fewer answers than questions."""
    seen: dict[str, int] = {}
    matched = []
    for q in annotation["questions"]:
        key = qid_key(q["question_id"])
        n = seen[key] = seen.get(key, -1) + 1
        cands = answers.get(key, [])
        matched.append(cands[min(n, len(cands) - 1)] if cands else None)
    return matched


def score_seed(annotation: dict, answers: dict[str, list[dict]]) -> dict:
    """Accuracy (percent) per question type, per data type ("image"/"video") and overall.

    `annotation` is SEED-Bench.json (`{questions: [...], question_type: {name: id}}`); a prediction
    is right when its stripped text equals the gold letter; a question without an answer is wrong.
    """
    type_names = {v: k for k, v in annotation.get("question_type", {}).items()}
    groups: dict[str, list[bool]] = {}
    missing = 0
    for q, ans in zip(annotation["questions"], match_answers(annotation, answers)):
        missing += ans is None
        ok = ans is not None and ans["text"].strip() == q["answer"]
        type_name = type_names.get(q["question_type_id"], str(q["question_type_id"]))
        for group in ("all", f"data:{q.get('data_type', 'image')}", f"type:{type_name}"):
            groups.setdefault(group, []).append(ok)
    if not groups:
        raise ValueError("SEED-Bench annotation has no questions")
    acc = {g: 100 * sum(v) / len(v) for g, v in groups.items()}
    return {"accuracy": acc["all"], "image_accuracy": acc.get("data:image"), "video_accuracy": acc.get("data:video"),
            "per_type": {g[5:]: a for g, a in acc.items() if g.startswith("type:")},
            "questions": len(groups["all"]), "missing": missing}


def check_seed_coverage(annotation: dict, answers: dict[str, list[dict]], source: str = "answers",
                        reference: str = "SEED-Bench.json", allow_incomplete: bool = False) -> None:
    """Every question of the data types answered has an answer, and every answer a question.

    LLaVA-1.5 answers only SEED's image questions, so a data type (image / video) without a single
    answer is not expected; within an answered type, a missing answer is refused unless allowed.
    """
    questions = annotation["questions"]
    answered_types = {q.get("data_type", "image") for q in questions if qid_key(q["question_id"]) in answers}
    expected = [q["question_id"] for q in questions if q.get("data_type", "image") in answered_types]
    check_coverage(expected, answers, source=source, reference=reference, allow_incomplete=allow_incomplete,
                   known=[q["question_id"] for q in questions])


def build_upload(annotation: dict, answers: dict[str, list[dict]]) -> tuple[list[dict], int]:
    """Upload rows in SEED-Bench.json question order; a question without an answer gets "" (counted)."""
    rows, missing = [], 0
    for q, ans in zip(annotation["questions"], match_answers(annotation, answers)):
        missing += ans is None
        rows.append({"question_id": q["question_id"], "prediction": "" if ans is None else ans["text"]})
    return rows, missing


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--annotation-file", required=True, help="SEED-Bench.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl")
    parser.add_argument("--result-upload-file", default=None, help="write the upload jsonl here")
    add_incomplete_arg(parser)
    add_save_args(parser, "SEED")
    args = parser.parse_args(argv)
    check_scorer_paths(args)
    annotation = read_json(args.annotation_file)
    answers = group_answers(load_answers(args.result_file))
    check_seed_coverage(annotation, answers, args.result_file, args.annotation_file, args.allow_incomplete)
    result = score_seed(annotation, answers)
    for name, acc in sorted(result["per_type"].items()):
        print(f"{name}: {acc:.2f}%")
    for key in ("image_accuracy", "video_accuracy"):
        if result[key] is not None:
            print(f"{key.split('_')[0]} accuracy: {result[key]:.2f}%")
    print(f"Total accuracy: {result['accuracy']:.2f}% ({result['questions']} questions, {result['missing']} unanswered)")
    if args.result_upload_file:
        rows, _ = build_upload(annotation, answers)
        write_jsonl(args.result_upload_file, rows)
        print(f"wrote {len(rows)} predictions to {args.result_upload_file}")
    headline = result["image_accuracy"] if result["image_accuracy"] is not None else result["accuracy"]
    save_from_args(args, {k: v for k, v in result.items() if k != "per_type"}, headline)
    return result


if __name__ == "__main__":
    run_main(main)
