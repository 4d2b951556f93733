"""MMBench (EN/CN): CircularEval accuracy, and the answers-jsonl + TSV -> submission xlsx converter.

The MMBench TSV already holds the circular copies of each question at `index + m * 1,000,000`.
A question counts as right only if every one of its passes is right.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter

from .coverage import add_incomplete_arg, check_coverage
from .io_utils import PathLike, index_by_qid, load_answers, qid_key
from .score_json import add_save_args, check_scorer_paths, save_from_args

if TYPE_CHECKING:
    import pandas as pd

CIRCULAR_STRIDE = 1_000_000
OPTION_LETTERS = ("A", "B", "C", "D")
UPLOAD_COLUMNS = ("index", "question", *OPTION_LETTERS, "prediction", "answer", "category", "l2-category", "split")
LETTER_PREFIX = re.compile(r"^\(?([A-Z])(?:[.):]|$)")


def _cell(value) -> str:
    """A table cell as text; empty for NaN / None."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def extract_choice(prediction: str, options: dict[str, str]) -> str | None:
    """The option letter a prediction names, or None.

    Accepted: a bare letter ("B"), a letter with ".", ")" or ":" ("B.", "(B)", "B: text"), or text equal
    (case-insensitive, trailing "." ignored) to exactly one option's content.
    """
    text = prediction.strip()
    match = LETTER_PREFIX.match(text)
    if match and match.group(1) in options:
        return match.group(1)
    wanted = text.rstrip(".").strip().lower()
    hits = [letter for letter, content in options.items() if content.strip().lower() == wanted]
    return hits[0] if len(hits) == 1 else None


def read_table(path: PathLike) -> "pd.DataFrame":
    """An MMBench TSV or an xlsx, with every cell kept as text (so an option "None" stays "None")."""
    import pandas as pd

    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xls"):
        df = pd.read_excel(path, keep_default_na=False, dtype=str)
    else:
        df = pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)
    if "index" not in df.columns:
        raise ValueError(f"{path}: no 'index' column; is this an MMBench TSV / submission xlsx?")
    df["index"] = df["index"].astype(int)
    return df


def attach_predictions(table: "pd.DataFrame", answers: Sequence[dict], source: PathLike = "answers",
                       reference: PathLike = "the TSV", allow_incomplete: bool = False) -> "pd.DataFrame":
    """Copy of `table` with a `prediction` column from the answers' `text` (question_id = TSV index).

    A row without an answer, or an answer without a row, is refused (`check_coverage`) unless
    `allow_incomplete` (then an unanswered row is wrong and an extra answer ignored).
    """
    by_id = index_by_qid(answers, source)
    check_coverage(list(table["index"]), by_id, source=source, reference=reference, allow_incomplete=allow_incomplete)
    out = table.copy()
    out["prediction"] = [by_id[qid_key(i)]["text"] if qid_key(i) in by_id else "" for i in out["index"]]
    return out


def circular_accuracy(table: "pd.DataFrame") -> dict:
    """CircularEval over a table with index, A-D, prediction and answer columns.

    Returns `{questions, hits, accuracy (percent), rows, row_accuracy, unanswered, per_category?}`;
    rows with an empty prediction are wrong.
    """
    if "answer" not in table.columns or not any(_cell(a) for a in table["answer"]):
        raise ValueError("no gold 'answer' column: this split can only be scored by the MMBench server")
    groups: dict[int, list[bool]] = {}
    category: dict[int, str] = {}
    for _, row in table.iterrows():
        options = {c: _cell(row[c]) for c in OPTION_LETTERS if c in table.columns and _cell(row[c])}
        ok = extract_choice(_cell(row["prediction"]), options) == _cell(row["answer"]).strip()
        qid = int(row["index"]) % CIRCULAR_STRIDE
        groups.setdefault(qid, []).append(ok)
        if "category" in table.columns and int(row["index"]) < CIRCULAR_STRIDE:
            category[qid] = _cell(row["category"])
    hits = {qid: all(v) for qid, v in groups.items()}
    rows = [ok for v in groups.values() for ok in v]
    result = {"questions": len(hits), "hits": sum(hits.values()), "accuracy": 100 * sum(hits.values()) / len(hits),
              "rows": len(rows), "row_accuracy": 100 * sum(rows) / len(rows),
              "unanswered": sum(not _cell(p).strip() for p in table["prediction"])}
    if category:
        per: dict[str, list[bool]] = {}
        for qid, cat in category.items():
            per.setdefault(cat, []).append(hits[qid])
        result["per_category"] = {c: 100 * sum(v) / len(v) for c, v in sorted(per.items())}
    return result


def write_submission(table: "pd.DataFrame", path: PathLike) -> Path:
    """Write the submission xlsx: index, question, A-D, prediction, then answer/category/l2-category/split if present."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = [c for c in UPLOAD_COLUMNS if c in table.columns]
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    out = table[cols].copy()
    for c in cols:
        if c != "index":
            # xlsx cannot hold control characters; a model answer may contain some.
            out[c] = [ILLEGAL_CHARACTERS_RE.sub("", _cell(v)) or None for v in out[c]]
    out.to_excel(path, index=False, engine="openpyxl")
    return path


def load_scored_table(result_file: PathLike, annotation_file: PathLike | None,
                      allow_incomplete: bool = False) -> "pd.DataFrame":
    """The table to score: a submission xlsx as is, or an answers jsonl joined to the TSV."""
    if Path(result_file).suffix.lower() == ".xlsx":
        table = read_table(result_file)
        if "prediction" not in table.columns:
            raise ValueError(f"{result_file}: no 'prediction' column")
        return table
    if annotation_file is None:
        raise ValueError(f"{result_file} is an answers jsonl; pass --annotation-file (the MMBench TSV) for the gold answers")
    return attach_predictions(read_table(annotation_file), load_answers(result_file), result_file, annotation_file,
                              allow_incomplete)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--result-file", required=True, help="answers jsonl (with --annotation-file) or submission xlsx")
    parser.add_argument("--annotation-file", default=None, help="MMBench TSV (e.g. mmbench_dev_20230712.tsv)")
    parser.add_argument("--upload-file", default=None, help="also write the submission xlsx here")
    add_incomplete_arg(parser)
    add_save_args(parser, "MMB")
    args = parser.parse_args(argv)
    check_scorer_paths(args)
    table = load_scored_table(args.result_file, args.annotation_file, args.allow_incomplete)
    if args.upload_file:
        write_submission(table, args.upload_file)
        print(f"wrote {len(table)} rows to {args.upload_file}")
    if "answer" not in table.columns or not any(_cell(a) for a in table["answer"]):
        print("no gold answers in the table: submit the xlsx to the MMBench evaluation server")
        return {}
    result = circular_accuracy(table)
    for cat, acc in result.get("per_category", {}).items():
        print(f"  {cat}: {acc:.2f}%")
    print(f"CircularEval accuracy: {result['accuracy']:.3f}% ({result['hits']}/{result['questions']} questions); "
          f"per-row accuracy {result['row_accuracy']:.2f}% over {result['rows']} rows"
          + (f"; {result['unanswered']} rows unanswered (counted wrong)" if result["unanswered"] else ""))
    save_from_args(args, {k: v for k, v in result.items() if k != "per_category"}, result["accuracy"])
    return result


if __name__ == "__main__":
    run_main(main)
