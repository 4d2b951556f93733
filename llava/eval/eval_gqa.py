"""GQA: convert answers into the official `[{questionId, prediction}]` list and score testdev-balanced accuracy."""

from __future__ import annotations

import argparse
from typing import Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import PathLike, load_answers, qid_key, read_json, write_json
from .score_json import add_save_args, check_scorer_paths, save_from_args


def normalize_prediction(text: str) -> str:
    """LLaVA's GQA answer form: strip, drop trailing periods, lower-case."""
    return text.strip().rstrip(".").lower()


def to_predictions(answers: Sequence[dict]) -> list[dict]:
    """The official prediction list `[{questionId, prediction}]`, in answer-file order."""
    return [{"questionId": a["question_id"], "prediction": normalize_prediction(a["text"])} for a in answers]


def score_gqa(predictions: Sequence[dict], questions: dict, source: PathLike = "questions",
              allow_incomplete: bool = False, result_file: PathLike = "predictions") -> dict:
    """Exact-match accuracy (percent) over the questions (those with `isBalanced` false are skipped).

    Every scored question needs a prediction and every prediction a question (`check_coverage`);
    with `allow_incomplete` a missing prediction counts as wrong.
    """
    preds = {qid_key(p["questionId"]): p["prediction"] for p in predictions}
    scored = {qid: q for qid, q in questions.items() if q.get("isBalanced", True)}
    if not scored:
        raise ValueError(f"{source}: no questions to score")
    check_coverage(scored, preds, source=result_file, reference=source, allow_incomplete=allow_incomplete,
                   known=questions)
    correct = sum(preds.get(qid_key(qid)) == q["answer"] for qid, q in scored.items())
    return {"questions": len(scored), "correct": correct, "accuracy": 100 * correct / len(scored)}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--result-file", "--src", dest="result_file", required=True, help="answers jsonl")
    parser.add_argument("--prediction-file", "--dst", dest="prediction_file", default=None,
                        help="write the official predictions JSON here (testdev_balanced_predictions.json)")
    parser.add_argument("--questions", default=None, help="testdev_balanced_questions.json ({qid: {answer, ...}})")
    add_incomplete_arg(parser)
    add_save_args(parser, "GQA")
    args = parser.parse_args(argv)
    check_scorer_paths(args)
    predictions = to_predictions(load_answers(args.result_file))
    if args.prediction_file:
        write_json(args.prediction_file, predictions, indent=None)
        print(f"wrote {len(predictions)} predictions to {args.prediction_file}")
    if not args.questions:
        return {"predictions": len(predictions)}
    result = score_gqa(predictions, read_json(args.questions), args.questions, args.allow_incomplete, args.result_file)
    print(f"GQA accuracy: {result['accuracy']:.2f}% ({result['correct']}/{result['questions']})")
    save_from_args(args, result, result["accuracy"])
    return result


if __name__ == "__main__":
    run_main(main)
