"""GQA: convert answers into the official `[{questionId, prediction}]` list and score testdev-balanced accuracy."""

from __future__ import annotations

import argparse
from typing import Sequence

from .io_utils import PathLike, load_answers, qid_key, read_json, write_json
from .score_json import add_save_args, save_from_args


def normalize_prediction(text: str) -> str:
    """LLaVA's GQA answer form: strip, drop trailing periods, lower-case."""
    return text.strip().rstrip(".").lower()


def to_predictions(answers: Sequence[dict]) -> list[dict]:
    """The official prediction list `[{questionId, prediction}]`, in answer-file order."""
    return [{"questionId": a["question_id"], "prediction": normalize_prediction(a["text"])} for a in answers]


def score_gqa(predictions: Sequence[dict], questions: dict, source: PathLike = "questions") -> dict:
    """Exact-match accuracy (percent) over the questions (those with `isBalanced` false are skipped).

    Every scored question needs a prediction; a missing one raises ValueError naming the count.
    """
    preds = {qid_key(p["questionId"]): p["prediction"] for p in predictions}
    scored = {qid: q for qid, q in questions.items() if q.get("isBalanced", True)}
    missing = [qid for qid in scored if qid_key(qid) not in preds]
    if missing:
        raise ValueError(f"{len(missing)} of {len(scored)} questions in {source} have no prediction "
                         f"(first: {missing[:3]}); answer the whole split")
    if not scored:
        raise ValueError(f"{source}: no questions to score")
    correct = sum(preds[qid_key(qid)] == q["answer"] for qid, q in scored.items())
    return {"questions": len(scored), "correct": correct, "accuracy": 100 * correct / len(scored)}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--result-file", "--src", dest="result_file", required=True, help="answers jsonl")
    parser.add_argument("--prediction-file", "--dst", dest="prediction_file", default=None,
                        help="write the official predictions JSON here (testdev_balanced_predictions.json)")
    parser.add_argument("--questions", default=None, help="testdev_balanced_questions.json ({qid: {answer, ...}})")
    add_save_args(parser, "GQA")
    args = parser.parse_args(argv)
    predictions = to_predictions(load_answers(args.result_file))
    if args.prediction_file:
        write_json(args.prediction_file, predictions, indent=None)
        print(f"wrote {len(predictions)} predictions to {args.prediction_file}")
    if not args.questions:
        return {"predictions": len(predictions)}
    result = score_gqa(predictions, read_json(args.questions), args.questions)
    print(f"GQA accuracy: {result['accuracy']:.2f}% ({result['correct']}/{result['questions']})")
    save_from_args(args, result, result["accuracy"])
    return result


if __name__ == "__main__":
    main()
