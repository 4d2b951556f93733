"""VQAv2 and VizWiz: offline val accuracy from an annotation file, and test-server upload files.

Subcommands:
  score  --benchmark vqav2|vizwiz --annotation-file A --result-file R [--question-file Q]
  submit --benchmark vqav2|vizwiz --question-file Q --result-file R --result-upload-file U
Uploads hold one entry per question of Q (in Q's order) with the EvalAI-normalised answer; a
question without an answer gets "" (VQAv2 test-dev answers cover only part of test2015).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Sequence

from llava.cli_errors import add_debug_arg, run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import PathLike, index_by_qid, load_answers, qid_key, read_json, read_jsonl, write_json
from .score_json import add_save_args, check_scorer_paths, save_from_args
from .vqa_metric import vqa_accuracy
from .vqa_normalize import normalize_answer


def _answer_strings(answers: Sequence) -> list[str]:
    return [a["answer"] if isinstance(a, dict) else a for a in answers]


def load_vqav2_annotations(path: PathLike) -> dict[str, list[str]]:
    """question_id -> human answers, from v2_mscoco_val2014_annotations.json (`{"annotations": [...]}`)."""
    doc = read_json(path)
    rows = doc["annotations"] if isinstance(doc, dict) else doc
    return {qid_key(r["question_id"]): _answer_strings(r["answers"]) for r in rows}


def load_vizwiz_annotations(path: PathLike) -> dict[str, list[str]]:
    """image file name -> human answers, from VizWiz val.json (a list of `{image, question, answers}`)."""
    return {r["image"]: _answer_strings(r["answers"]) for r in read_json(path)}


@dataclass(frozen=True)
class VqaBenchmark:
    """How a benchmark keys its questions (`key` field of the LLaVA question file) and reads its GT."""

    name: str
    key: str
    load_annotations: Callable[[PathLike], dict[str, list[str]]]


BENCHMARKS = {
    "vqav2": VqaBenchmark("VQAv2", "question_id", load_vqav2_annotations),
    "vizwiz": VqaBenchmark("VizWiz", "image", load_vizwiz_annotations),
}


def _answer_keys(bench: VqaBenchmark, answers: list[dict], question_file: PathLike | None) -> list[str]:
    """The annotation key of every answer (VizWiz needs the question file to map id -> image)."""
    if bench.key == "question_id":
        return [qid_key(a["question_id"]) for a in answers]
    if question_file is None:
        raise ValueError(f"{bench.name} answers are matched by {bench.key}; pass --question-file")
    questions = index_by_qid(read_jsonl(question_file), question_file)
    keys = []
    for a in answers:
        q = questions.get(qid_key(a["question_id"]))
        if q is None:
            raise ValueError(f"question {a['question_id']}: not in {question_file}")
        keys.append(str(q[bench.key]))
    return keys


def score_vqa(benchmark: str, annotation_file: PathLike, result_file: PathLike,
              question_file: PathLike | None = None, allow_incomplete: bool = False) -> dict:
    """`{samples, accuracy}` (percent) of an answer file against val annotations.

    Every annotated question needs an answer and every answer an annotation (`check_coverage`,
    by the benchmark's key); with `allow_incomplete` the answered, annotated questions are scored.
    """
    bench = BENCHMARKS[benchmark]
    gt = bench.load_annotations(annotation_file)
    answers = load_answers(result_file)
    keys = _answer_keys(bench, answers, question_file)
    check_coverage(gt, keys, source=result_file, reference=annotation_file, allow_incomplete=allow_incomplete)
    scores = [vqa_accuracy(ans["text"], gt[key]) for ans, key in zip(answers, keys) if key in gt]
    if not scores:
        raise ValueError(f"{result_file}: no answers to score")
    return {"samples": len(scores), "accuracy": 100 * sum(scores) / len(scores)}


def build_upload(benchmark: str, questions: Sequence[dict], answers: Sequence[dict], source: PathLike = "answers",
                 reference: PathLike = "the question file", allow_extra: bool = False) -> tuple[list[dict], int]:
    """Upload entries `{<key>: ..., answer: normalised text}` in question order, and the number missing.

    Questions without an answer get "" (VQAv2 test-dev answers cover only part of test2015); an
    answer to a question not in the file is refused unless `allow_extra`.
    """
    bench = BENCHMARKS[benchmark]
    by_id = index_by_qid(answers, "answers")
    asked = {qid_key(q["question_id"]) for q in questions}
    extra = [qid for qid in by_id if qid not in asked]
    if extra and not allow_extra:
        check_coverage(asked, by_id, source=source, reference=reference)  # raises, naming the extra answers
    upload, missing = [], 0
    for q in questions:
        ans = by_id.get(qid_key(q["question_id"]))
        missing += ans is None
        upload.append({bench.key: q[bench.key], "answer": "" if ans is None else normalize_answer(ans["text"])})
    return upload, missing


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    add_debug_arg(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser("score", help="val accuracy against an annotation file", formatter_class=HelpFormatter)
    score.add_argument("--annotation-file", required=True,
                       help="val annotations (v2_mscoco_val2014_annotations.json, or VizWiz val.json)")
    score.add_argument("--question-file", default=None, help="LLaVA question jsonl (needed for VizWiz)")
    submit = sub.add_parser("submit", help="write the test-server upload JSON", formatter_class=HelpFormatter)
    submit.add_argument("--question-file", "--annotation-file", dest="question_file", required=True,
                        help="LLaVA question jsonl of the full split to upload")
    submit.add_argument("--result-upload-file", required=True, help="the upload JSON to write")
    for p in (score, submit):
        p.add_argument("--benchmark", choices=sorted(BENCHMARKS), required=True, help="which benchmark's rules")
        p.add_argument("--result-file", required=True, help="answers jsonl")
        add_incomplete_arg(p)
    add_save_args(score, "")
    args = parser.parse_args(argv)
    check_scorer_paths(args)
    name = BENCHMARKS[args.benchmark].name

    if args.command == "submit":
        upload, missing = build_upload(args.benchmark, read_jsonl(args.question_file), load_answers(args.result_file),
                                       args.result_file, args.question_file, args.allow_incomplete)
        write_json(args.result_upload_file, upload, indent=None)
        print(f"{name}: wrote {len(upload)} answers to {args.result_upload_file} ({missing} questions had no answer)")
        return {"entries": len(upload), "missing": missing}

    result = score_vqa(args.benchmark, args.annotation_file, args.result_file, args.question_file,
                       args.allow_incomplete)
    print(f"{name} samples: {result['samples']}\nAccuracy: {result['accuracy']:.2f}%")
    args.benchmark_name = args.benchmark_name or name
    save_from_args(args, result, result["accuracy"])
    return result


if __name__ == "__main__":
    run_main(main)
