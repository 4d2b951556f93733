"""POPE scorer: yes/no parsing, per-category confusion counts, F1, and the mean F1 over categories."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import PathLike, index_by_qid, load_answers, qid_key, read_jsonl
from .score_json import add_save_args, check_scorer_paths, save_from_args

NEGATIVE_WORDS = frozenset({"No", "no", "not"})


def parse_yes_no(text: str) -> str:
    """LLaVA's rule: keep the text before the first '.', drop ',', split on ' '; any No/no/not -> "no"."""
    first = text.split(".", 1)[0]
    words = first.replace(",", "").split(" ")
    return "no" if NEGATIVE_WORDS.intersection(words) else "yes"


@dataclass
class PopeScores:
    """Confusion counts and the derived rates for one category (positive class "yes")."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.total)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return _ratio(2 * p * r, p + r)

    @property
    def yes_ratio(self) -> float:
        return _ratio(self.tp + self.fp, self.total)

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total, "accuracy": self.accuracy, "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "yes_ratio": self.yes_ratio}


def _ratio(num: float, den: float) -> float:
    """num/den, or 0.0 when den is 0 (e.g. precision with no "yes" predictions)."""
    return num / den if den else 0.0


def confusion(predictions: Sequence[str], labels: Sequence[str]) -> PopeScores:
    """Count TP/FP/TN/FN; a label other than "no" counts as "yes" (as in LLaVA)."""
    counts = {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    for pred, label in zip(predictions, labels, strict=True):
        pred_yes, gold_yes = pred == "yes", label != "no"
        key = ("t" if pred_yes == gold_yes else "f") + ("p" if pred_yes else "n")
        counts[key] += 1
    return PopeScores(**counts)


def label_file(annotation_dir: PathLike, category: str) -> Path:
    """Path of the POPE label file for `category` (`coco_pope_<category>.json`)."""
    return Path(annotation_dir) / f"coco_pope_{category}.json"


def evaluate_pope(annotation_dir: PathLike, question_file: PathLike, result_file: PathLike,
                  allow_incomplete: bool = False) -> dict:
    """Score a POPE answer file; returns `{categories: {cat: metrics}, mean_f1: F1*100 averaged}`.

    Each category's answers, in answer-file order, are matched to the lines of its label file by
    position. A count mismatch raises ValueError naming the category and both counts. Missing or
    extra answers are refused (`check_coverage`); with `allow_incomplete` the answered questions are
    scored, each against the label at its position among its category's questions.
    """
    rows = read_jsonl(question_file)
    questions = index_by_qid(rows, question_file)
    answers = load_answers(result_file)
    coverage = check_coverage(questions, (a["question_id"] for a in answers), source=result_file,
                              reference=question_file, allow_incomplete=allow_incomplete)
    position: dict[str, int] = {}  # question id -> its index among its category's questions
    count: dict[str, int] = {}  # category -> its number of questions
    for q in rows:
        position[qid_key(q["question_id"])] = count.get(q["category"], 0)
        count[q["category"]] = count.get(q["category"], 0) + 1
    by_category: dict[str, list[str]] = {}
    picked: dict[str, list[int]] = {}
    for ans in answers:
        question = questions.get(qid_key(ans["question_id"]))
        if question is None:
            continue  # an extra answer (reported above; only reached with allow_incomplete)
        by_category.setdefault(question["category"], []).append(parse_yes_no(ans["text"]))
        picked.setdefault(question["category"], []).append(position[qid_key(ans["question_id"])])

    categories: dict[str, dict] = {}
    for category in sorted(by_category):
        path = label_file(annotation_dir, category)
        if not path.is_file():
            raise FileNotFoundError(f"category {category!r}: label file {path} not found; check --annotation-dir")
        labels = [row["label"] for row in read_jsonl(path)]
        preds = by_category[category]
        if not coverage.complete and len(labels) == count[category]:
            labels = [labels[i] for i in picked[category]]
        if len(preds) != len(labels):
            raise ValueError(
                f"category {category!r}: {len(preds)} answers but {len(labels)} labels in {path}; "
                "answers are matched to labels by position, so both must cover the same questions"
            )
        categories[category] = confusion(preds, labels).as_dict()
    if not categories:
        raise ValueError(f"{result_file}: no answers to score")
    mean_f1 = 100 * sum(c["f1"] for c in categories.values()) / len(categories)
    return {"categories": categories, "mean_f1": mean_f1}


def format_report(result: dict) -> str:
    """Human-readable per-category table and the mean F1."""
    lines = []
    for cat, m in result["categories"].items():
        lines.append(f"Category: {cat}, # samples: {m['total']}")
        lines.append(f"  TP\tFP\tTN\tFN\n  {m['tp']}\t{m['fp']}\t{m['tn']}\t{m['fn']}")
        lines.append(
            f"  Accuracy: {m['accuracy']:.4f}  Precision: {m['precision']:.4f}  Recall: {m['recall']:.4f}  "
            f"F1: {100 * m['f1']:.3f}  Yes ratio: {m['yes_ratio']:.4f}"
        )
    lines.append(f"Mean F1 over {len(result['categories'])} categories: {result['mean_f1']:.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--annotation-dir", required=True, help="folder with coco_pope_<category>.json label files")
    parser.add_argument("--question-file", required=True, help="llava_pope_test.jsonl (gives each question's category)")
    parser.add_argument("--result-file", required=True, help="answers jsonl")
    add_incomplete_arg(parser)
    add_save_args(parser, "POPE")
    args = parser.parse_args(argv)
    check_scorer_paths(args)
    result = evaluate_pope(args.annotation_dir, args.question_file, args.result_file, args.allow_incomplete)
    print(format_report(result))
    metrics = {f"{cat}_f1": 100 * m["f1"] for cat, m in result["categories"].items()}
    metrics.update({f"{cat}_acc": 100 * m["accuracy"] for cat, m in result["categories"].items()})
    metrics["mean_f1"] = result["mean_f1"]
    save_from_args(args, metrics, result["mean_f1"])
    return result


if __name__ == "__main__":
    run_main(main)
