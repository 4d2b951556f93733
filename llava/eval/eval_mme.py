"""MME: convert LLaVA answers into the official eval_tool layout, and score an eval_tool results folder.

Results folder: one `<subtask>.txt` per subtask, lines `image \\t question \\t GT \\t prediction`, with
the two questions of each image on consecutive lines. Score per subtask = acc + acc+, where
acc = 100 * correct / questions and acc+ = 100 * images with both answers right / images.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import PathLike, load_answers
from .score_json import add_save_args, check_scorer_paths, save_from_args

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")
GROUPS = {"perception": PERCEPTION, "cognition": COGNITION}

LLAVA_SUFFIX = "Answer the question using a single word or phrase."
MME_SUFFIX = " Please answer yes or no."
MME_SUFFIX_TWO_SPACES = "  Please answer yes or no."
QA_SUBDIR = "questions_answers_YN"

GtKey = tuple[str, str, str]  # (subtask, image file stem, question)


# ----------------------------------------------------------------------------- ground truth


def _stem(image: str) -> str:
    return Path(image).stem


def load_gt_tsv(path: PathLike) -> dict[GtKey, str]:
    """Ground truth from a TSV with header `category image question answer` (plain tab split, no quoting)."""
    path = Path(path)
    gt: dict[GtKey, str] = {}
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        cols = {name: i for i, name in enumerate(header)}
        missing = {"category", "image", "question", "answer"} - cols.keys()
        if missing:
            raise ValueError(f"{path}: header lacks column(s) {sorted(missing)}; expected category, image, question, answer")
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise ValueError(f"{path}:{lineno}: {len(fields)} tab-separated fields, expected {len(header)}")
            key = (fields[cols["category"]], _stem(fields[cols["image"]]), fields[cols["question"]])
            gt[key] = fields[cols["answer"]]
    return gt


def load_gt_folder(root: PathLike) -> dict[GtKey, str]:
    """Ground truth from the MME release folder.

    Each subtask folder holds `<image-stem>.txt` files of `question \\t answer` lines, either in
    `questions_answers_YN/` (next to `images/`) or directly beside the images.
    """
    root = Path(root)
    gt: dict[GtKey, str] = {}
    for subtask_dir in sorted(p for p in root.iterdir() if p.is_dir() and p.name in PERCEPTION + COGNITION):
        qa_dir = subtask_dir / QA_SUBDIR if (subtask_dir / QA_SUBDIR).is_dir() else subtask_dir
        for txt in sorted(qa_dir.glob("*.txt")):
            for lineno, line in enumerate(txt.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                fields = line.strip().split("\t")
                if len(fields) != 2:
                    raise ValueError(f"{txt}:{lineno}: expected 'question<TAB>answer', got {len(fields)} field(s)")
                gt[(subtask_dir.name, txt.stem, fields[0])] = fields[1]
    if not gt:
        raise ValueError(f"{root}: no MME subtask folders (existence, count, ...) with question/answer .txt files")
    return gt


def load_gt(path: PathLike) -> dict[GtKey, str]:
    """Ground truth from a TSV file or from the MME release folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"MME ground truth {path} not found; pass the MME release folder or a TSV")
    return load_gt_folder(path) if path.is_dir() else load_gt_tsv(path)


# ----------------------------------------------------------------------------- conversion


def mme_question(prompt: str) -> str:
    """The MME question for a LLaVA prompt: drop LLaVA's short-answer instruction, add MME's suffix."""
    return prompt.replace(LLAVA_SUFFIX, "").strip() + MME_SUFFIX


def _clean_field(text: str) -> str:
    """Keep a field on one line of the tab-separated format."""
    return " ".join(text.replace("\t", " ").splitlines())


def convert_answers(answers: Iterable[dict], gt: dict[GtKey, str], source: PathLike = "answers",
                    reference: PathLike = "the ground truth", allow_incomplete: bool = False) -> dict[str, list[str]]:
    """Lines of each `<subtask>.txt`, in answer-file order (question_id is `<subtask>/<image>`).

    An answer whose question is not in the ground truth is an error naming it; a ground-truth
    question without an answer is refused (`check_coverage`) unless `allow_incomplete`.
    """
    files: dict[str, list[str]] = {}
    found: list[GtKey] = []
    for ans in answers:
        qid = str(ans["question_id"])
        if "/" not in qid:
            raise ValueError(f"question {qid!r}: expected a question_id of the form '<subtask>/<image>'")
        subtask, image = qid.split("/", 1)
        question = mme_question(ans["prompt"])
        key = (subtask, _stem(image), question)
        if key not in gt:
            key = (subtask, _stem(image), question[: -len(MME_SUFFIX)] + MME_SUFFIX_TWO_SPACES)
        if key not in gt:
            raise ValueError(f"question {qid}: {question!r} is not in the ground truth; is it the right MME release?")
        line = "\t".join([image, key[2], gt[key], _clean_field(ans["text"])])
        files.setdefault(subtask, []).append(line)
        found.append(key)
    check_coverage(map(_gt_label, gt), map(_gt_label, found), source=source, reference=reference,
                   allow_incomplete=allow_incomplete)
    return files


def _gt_label(key: GtKey) -> str:
    return f"{key[0]}/{key[1]}: {key[2]}"


def write_results_dir(files: dict[str, list[str]], results_dir: PathLike) -> Path:
    """Write one `<subtask>.txt` per subtask into `results_dir`."""
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    for subtask, lines in files.items():
        (out / f"{subtask}.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out


# ----------------------------------------------------------------------------- scoring


def parse_pred(text: str) -> str:
    """Official parse: lower-case; exact yes/no, else 'yes' in the first 4 chars, else 'no' there, else 'other'."""
    text = text.lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


@dataclass
class SubtaskScore:
    """Counts for one subtask; acc and acc+ in percent."""

    questions: int
    correct: int
    images: int
    images_both_correct: int

    @property
    def acc(self) -> float:
        return 100 * self.correct / self.questions

    @property
    def acc_plus(self) -> float:
        return 100 * self.images_both_correct / self.images

    @property
    def score(self) -> float:
        return self.acc + self.acc_plus


def score_lines(lines: Sequence[str], source: str = "<lines>") -> SubtaskScore:
    """Score one subtask's eval_tool lines; consecutive lines form an image's question pair."""
    rows = []
    for n, line in enumerate(lines, start=1):
        fields = line.rstrip("\r\n").split("\t")
        if len(fields) != 4:
            raise ValueError(f"{source}: line {n} has {len(fields)} tab-separated fields, expected 4 (image, question, GT, prediction)")
        gt = fields[2].lower()
        if gt not in ("yes", "no"):
            raise ValueError(f"{source}: line {n} has GT {fields[2]!r}; expected Yes or No")
        rows.append((fields[0], gt == parse_pred(fields[3])))
    if not rows or len(rows) % 2:
        raise ValueError(f"{source}: {len(rows)} lines; MME needs exactly two questions per image on consecutive lines")
    both = 0
    for i in range(0, len(rows), 2):
        (img_a, ok_a), (img_b, ok_b) = rows[i], rows[i + 1]
        if img_a != img_b:
            raise ValueError(f"{source}: lines {i + 1} and {i + 2} are for different images ({img_a}, {img_b}); keep each image's two questions together")
        both += ok_a and ok_b
    return SubtaskScore(len(rows), sum(ok for _, ok in rows), len(rows) // 2, both)


def score_results_dir(results_dir: PathLike) -> dict:
    """Score every known subtask file in an eval_tool results folder.

    Returns `{subtasks: {name: {acc, acc_plus, score, ...}}, perception, cognition, total, missing: [...]}`;
    group totals sum only the subtasks present.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"MME results folder {root} not found")
    subtasks: dict[str, dict] = {}
    missing: list[str] = []
    totals: dict[str, float] = {}
    for group, names in GROUPS.items():
        totals[group] = 0.0
        for name in names:
            path = root / f"{name}.txt"
            if not path.is_file():
                missing.append(name)
                continue
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            s = score_lines(lines, str(path))
            subtasks[name] = {"group": group, "questions": s.questions, "correct": s.correct, "images": s.images,
                              "images_both_correct": s.images_both_correct, "acc": s.acc, "acc_plus": s.acc_plus,
                              "score": s.score}
            totals[group] += s.score
    if not subtasks:
        raise ValueError(f"{root}: none of the 14 MME subtask files (<subtask>.txt) found")
    return {"subtasks": subtasks, **totals, "total": sum(totals.values()), "missing": missing}


def format_report(result: dict) -> str:
    """The eval_tool-style report: group totals, then per-subtask score, acc and acc+."""
    lines = []
    for group, names in GROUPS.items():
        present = [n for n in names if n in result["subtasks"]]
        lines.append(f"=========== {group} ===========")
        lines.append(f"total score: {result[group]:.2f}" + ("" if present else " (no subtasks)"))
        for name in present:
            s = result["subtasks"][name]
            lines.append(f"\t {name}  score: {s['score']:.2f}  (acc {s['acc']:.2f}, acc+ {s['acc_plus']:.2f})")
    if result["missing"]:
        lines.append(f"missing subtask files (not scored): {', '.join(result['missing'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--answers-file", default=None, help="LLaVA answers jsonl; converted into --results-dir first")
    parser.add_argument("--gt", default=None, help="MME release folder or TSV (category, image, question, answer)")
    parser.add_argument("--results-dir", required=True, help="eval_tool results folder (written when --answers-file is given)")
    add_incomplete_arg(parser)
    add_save_args(parser, "MME")
    args = parser.parse_args(argv)
    check_scorer_paths(args)
    if args.answers_file:
        if not args.gt:
            parser.error("--answers-file needs --gt (the MME ground truth)")
        files = convert_answers(load_answers(args.answers_file, required=("prompt",)), load_gt(args.gt),
                                args.answers_file, args.gt, args.allow_incomplete)
        write_results_dir(files, args.results_dir)
        print(f"wrote {len(files)} subtask files to {args.results_dir}")
    result = score_results_dir(args.results_dir)
    print(format_report(result))
    metrics = {"perception": result["perception"], "cognition": result["cognition"], "total": result["total"]}
    metrics.update({name: s["score"] for name, s in result["subtasks"].items()})
    save_from_args(args, metrics, result["perception"])
    return result


if __name__ == "__main__":
    run_main(main)
