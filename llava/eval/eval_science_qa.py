"""ScienceQA scorer: parse the predicted option letter, report accuracy overall and on image problems."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import index_by_qid, load_answers, read_json, write_json
from .score_json import add_save_args, check_scorer_paths, save_from_args

DEFAULT_OPTIONS = ("A", "B", "C", "D", "E")
ANSWER_IS = re.compile(r"The answer is ([A-Z]).")
FAILED = "FAILED"
IMAGE_TOKEN = "<image>"
OPTION_MARK = "\n{}. "


def parse_answer(text: str, options: Sequence[str] = DEFAULT_OPTIONS) -> str:
    """The predicted letter, or "FAILED".

    Rules in order: the text is exactly an option letter; the text is "X. ..." (len >= 3) with X an
    option; the text has exactly one match of `The answer is ([A-Z]).`.
    """
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else FAILED


def choice_index(letter: str, num_choices: int, options: Sequence[str] = DEFAULT_OPTIONS) -> int:
    """Index of `letter` among the first `num_choices` options, or -1 (FAILED or out of range)."""
    active = list(options[:num_choices])
    return active.index(letter) if letter in active else -1


def evaluate_science_qa(problems: dict, split_ids: Sequence[str], answers: dict[str, dict],
                        options: Sequence[str] = DEFAULT_OPTIONS) -> tuple[dict, dict]:
    """Score `answers` (by problem id) on `split_ids`.

    Returns `(analysis, result)`: analysis = `{correct: [...], incorrect: [...]}` with one entry per
    problem (question_id, parsed_ans, ground_truth, question, pred, is_multimodal); result =
    `{acc, correct, count, results: {pid: index or -1}, outputs: {pid: raw text}}`. A problem without
    an answer counts as FAILED (prompt "Unknown").
    """
    analysis: dict[str, list] = {"correct": [], "incorrect": []}
    results: dict[str, int] = {}
    outputs: dict[str, str] = {}
    for pid in split_ids:
        if pid not in problems:
            raise ValueError(f"problem {pid}: listed in the split but missing from problems.json")
        prob = problems[pid]
        ans = answers.get(pid, {"text": FAILED, "prompt": "Unknown"})
        text = ans["text"]
        letter = parse_answer(text, options)
        pred_idx = choice_index(letter, len(prob["choices"]), options)
        results[pid] = pred_idx
        outputs[pid] = text
        entry = {"question_id": pid, "parsed_ans": letter, "ground_truth": options[prob["answer"]],
                 "question": ans["prompt"], "pred": text, "is_multimodal": IMAGE_TOKEN in ans["prompt"]}
        analysis["correct" if pred_idx == prob["answer"] else "incorrect"].append(entry)
    correct, count = len(analysis["correct"]), len(split_ids)
    result = {"acc": 100 * correct / count if count else 0.0, "correct": correct, "count": count,
              "results": results, "outputs": outputs}
    return analysis, result


def summary(analysis: dict) -> dict:
    """Totals and accuracies (percent) overall and over multimodal problems."""
    correct, incorrect = analysis["correct"], analysis["incorrect"]
    img_correct = sum(e["is_multimodal"] for e in correct)
    img_total = img_correct + sum(e["is_multimodal"] for e in incorrect)
    total = len(correct) + len(incorrect)
    return {"total": total, "correct": len(correct), "accuracy": 100 * len(correct) / total if total else 0.0,
            "img_total": img_total, "img_correct": img_correct,
            "img_accuracy": 100 * img_correct / img_total if img_total else 0.0}


def build_problems_from_llava_json(items: Sequence[dict], options: Sequence[str] = DEFAULT_OPTIONS) -> dict[str, dict]:
    """A minimal problems.json (`{pid: {choices, answer}}`) rebuilt from LLaVA's llava_test_CQM-A.json.

    The human turn is split at its last "\\nA. ", then at "\\nB. ", "\\nC. ", ... in order (never on
    plain newlines: some choices contain them); `answer` is the index of the gpt turn's letter.
    """
    problems: dict[str, dict] = {}
    for item in items:
        pid = str(item["id"])
        human, gpt = item["conversations"][0]["value"], item["conversations"][1]["value"].strip()
        head, mark, rest = human.rpartition(OPTION_MARK.format(options[0]))
        if not mark:
            raise ValueError(f"problem {pid}: no '{options[0]}. ' option line in the human turn")
        choices = []
        for letter in options[1:]:
            choice, mark, after = rest.partition(OPTION_MARK.format(letter))
            if not mark:
                break
            choices.append(choice)
            rest = after
        choices.append(rest)
        if gpt not in options[: len(choices)]:
            raise ValueError(f"problem {pid}: gold letter {gpt!r} is not one of its {len(choices)} choices")
        problems[pid] = {"choices": choices, "answer": options.index(gpt)}
    return problems


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--base-dir", required=True, help="folder with problems.json and pid_splits.json")
    parser.add_argument("--result-file", required=True, help="answers jsonl")
    parser.add_argument("--output-file", default=None, help="per-problem analysis JSON ({correct, incorrect})")
    parser.add_argument("--output-result", default=None, help="result JSON ({acc, correct, count, results, outputs})")
    parser.add_argument("--split", default="test", help="the split of pid_splits.json to score")
    parser.add_argument("--options", nargs="+", default=list(DEFAULT_OPTIONS), help="the option letters, in order")
    add_incomplete_arg(parser)
    add_save_args(parser, "SQA-IMG")
    args = parser.parse_args(argv)
    check_scorer_paths(args)

    base = Path(args.base_dir)
    splits = read_json(base / "pid_splits.json")
    if args.split not in splits:
        raise ValueError(f"split {args.split!r} not in {base / 'pid_splits.json'}; available: {', '.join(splits)}")
    problems = read_json(base / "problems.json")
    answers = index_by_qid(load_answers(args.result_file, required=("prompt",)), args.result_file)
    check_coverage(splits[args.split], answers, source=args.result_file,
                   reference=f"split {args.split!r} of {base / 'pid_splits.json'}", allow_incomplete=args.allow_incomplete)
    analysis, result = evaluate_science_qa(problems, splits[args.split], answers, args.options)
    s = summary(analysis)
    print(f"Total: {s['total']}, Correct: {s['correct']}, Accuracy: {s['accuracy']:.2f}%, "
          f"IMG-Accuracy: {s['img_accuracy']:.2f}% ({s['img_correct']}/{s['img_total']})")
    if args.output_file:
        write_json(args.output_file, analysis)
    if args.output_result:
        write_json(args.output_result, result)
    save_from_args(args, {"accuracy": s["accuracy"], "img_accuracy": s["img_accuracy"]}, s["img_accuracy"])
    return s


if __name__ == "__main__":
    run_main(main)
