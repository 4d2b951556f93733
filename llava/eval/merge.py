"""Merge per-rank (or per-chunk) answers files into one, in question order, after checking them.

The merge refuses, with a message naming what is wrong, when
- a question (question_id, prompt) of the expected list has no answer, or more than one;
- an answer belongs to no expected question;
- the answers disagree on how they were made (RUN_FIELDS: model, K, method, its options, template, dtype).
The merged file is written to a temporary file and renamed, so a half-written merge never looks complete.

Distributed drivers merge in-process (rank 0, after a barrier) from their own item list, so that works
for every question format (ScienceQA's JSON and MMBench's TSV included). The CLI reads LLaVA jsonl
question files ({question_id, text}; the answer's `prompt` is the text, as `model_vqa_loader` /
`model_vqa` write it); without one it keeps the shards' rank order (rank shards are contiguous slices of
the question list) and checks duplicates and metadata only:

    python -m llava.eval.merge --question-file Q.jsonl --answers-file A.jsonl            # finds A.rank*-of-*.jsonl
    python -m llava.eval.merge --question-file Q.jsonl --answers-file A.jsonl S0.jsonl S1.jsonl ...
    python -m llava.eval.merge --answers-file A.jsonl      # any format: rank order, no completeness check
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

from llava.eval.answers_writer import answer_key
from llava.eval.io_utils import read_jsonl
from llava.eval.sharding import balanced_chunk, find_shards

# Answer-record fields that must agree across every merged answer ("metadata.x" is inside `metadata`).
RUN_FIELDS = (
    "model_id",
    "metadata.visual_token_num",
    "metadata.pruning_method",
    "metadata.pruning_args",
    "metadata.conv_mode",
    "metadata.dtype",
    "metadata.lang",
    "metadata.anyres_mode",
    "metadata.pruning_ratio",
    "metadata.visual_token_ratio",
    "metadata.vision_attn",
)
SHOW = 20  # how many offending keys an error message lists


class MergeError(ValueError):
    """The shards do not form one complete, consistent answers file."""


def _field(record: dict, name: str):
    if name.startswith("metadata."):
        return (record.get("metadata") or {}).get(name.split(".", 1)[1])
    return record.get(name)


def read_answers(path: str | os.PathLike) -> list[tuple[tuple[str, str], str, dict]]:
    """(key, line, record) for every answer in a shard; a line that is not a complete record is an error."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = answer_key(record["question_id"], record.get("prompt", ""))
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise MergeError(
                    f"{path}:{lineno}: not a complete answer record ({err}); was the run killed? "
                    "Rerun the driver with the same flags to resume it, then merge"
                ) from None
            rows.append((key, line if line.endswith("\n") else line + "\n", record))
    return rows


def _show(keys) -> str:
    keys = list(keys)
    shown = ", ".join(f"({qid!r}, {prompt[:40]!r})" for qid, prompt in keys[:SHOW])
    return shown + (f", ... ({len(keys) - SHOW} more)" if len(keys) > SHOW else "")


def merge_answers(
    expected: Sequence[tuple] | None, shards: Sequence[str | os.PathLike], out: str | os.PathLike
) -> int:
    """Write the answers of `shards` to `out` in the order of `expected` (question_id, prompt) keys.

    Raises MergeError (nothing written) on missing, duplicate or unexpected answers, or on answers
    whose RUN_FIELDS disagree. Returns the number of answers written. `expected=None` keeps the
    shards' own order (rank shards are contiguous, so rank order is question order) and cannot tell
    whether a question is missing.
    """
    if expected is None:
        present = [s for s in shards if os.path.isfile(s)]
        expected = list(dict.fromkeys(key for shard in present for key, _, _ in read_answers(shard)))
    expected = [answer_key(*k) for k in expected]
    repeated = [k for k, n in Counter(expected).items() if n > 1]
    if repeated:
        raise MergeError(f"the question list repeats {len(repeated)} (question_id, prompt) key(s): {_show(repeated)}")
    missing_files = [str(s) for s in shards if not os.path.isfile(s)]
    if missing_files:
        raise MergeError(
            f"shard file(s) not found: {missing_files[:SHOW]}; on a multi-node run the answers folder must be "
            "shared by all nodes (or copy the shards together and run python -m llava.eval.merge)"
        )

    lines: dict[tuple[str, str], str] = {}
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    values: dict[str, dict[str, Counter]] = {name: defaultdict(Counter) for name in RUN_FIELDS}
    for shard in shards:
        name = Path(shard).name
        for key, line, record in read_answers(shard):
            where[key].append(name)
            lines.setdefault(key, line)
            for field in RUN_FIELDS:
                values[field][json.dumps(_field(record, field), sort_keys=True)][name] += 1

    wanted = set(expected)
    problems = []
    missing = [k for k in expected if k not in where]
    if missing:
        problems.append(f"{len(missing)} question(s) have no answer: {_show(missing)}")
    dup = [k for k, names in where.items() if len(names) > 1]
    if dup:
        detail = "; ".join(f"{k[0]!r} in {where[k]}" for k in dup[:SHOW])
        problems.append(f"{len(dup)} question(s) are answered more than once: {_show(dup)} ({detail})")
    extra = [k for k in where if k not in wanted]
    if extra:
        problems.append(
            f"{len(extra)} answer(s) match no question of the list (another question file?): {_show(extra)}"
        )
    for field in RUN_FIELDS:
        if len(values[field]) > 1:
            seen = "; ".join(
                f"{value} in " + ", ".join(f"{n} ({c} answers)" for n, c in sorted(files.items()))
                for value, files in values[field].items()
            )
            problems.append(f"the answers disagree on {field}: {seen}")
    if problems:
        raise MergeError(f"cannot merge {len(shards)} shard(s) into {out}:\n  - " + "\n  - ".join(problems))

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # same folder, so os.replace is atomic
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(lines[k] for k in expected)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return len(expected)


def question_keys(question_file: str | os.PathLike) -> list[tuple[str, str]]:
    """The (question_id, prompt) keys of a LLaVA jsonl question file, in file order."""
    keys = []
    for n, q in enumerate(read_jsonl(str(question_file)), start=1):
        if "question_id" not in q or "text" not in q:
            raise MergeError(
                f"{question_file}: line {n} lacks question_id/text; the CLI merges LLaVA jsonl question files "
                "(ScienceQA and MMBench runs merge inside their driver)"
            )
        keys.append(answer_key(q["question_id"], q["text"]))
    return keys


def _rank(path: str) -> tuple:
    """Sort key putting rank shards in rank order (rank10 after rank9), other names alphabetically."""
    m = re.search(r"\.rank(\d+)-of-(\d+)", Path(path).name)
    return (Path(path).name[: m.start()], int(m.group(2)), int(m.group(1))) if m else (path, 0, 0)


def main(argv: list[str] | None = None) -> int:
    from llava.cli_errors import USER_ERROR_EXIT, add_debug_arg
    from llava.cli_help import HelpFormatter
    from llava.eval.cli_args import check_answers_paths

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--question-file", default=None,
                        help="LLaVA jsonl question file: the expected questions and order (without it: the shards' "
                             "order, in rank order, checking duplicates and metadata but not missing questions)")
    parser.add_argument("--answers-file", required=True, help="the merged file to write")
    parser.add_argument("--num-chunks", type=int, default=1, help="the run's --num-chunks (merge one chunk)")
    parser.add_argument("--chunk-idx", type=int, default=0, help="the run's --chunk-idx")
    add_debug_arg(parser)
    parser.add_argument("shards", nargs="*",
                        help="shard files or globs (default: <answers stem>.rank*-of-*.jsonl beside --answers-file)")
    args = parser.parse_args(argv)

    try:
        keys = None
        if args.question_file:
            keys = balanced_chunk(question_keys(args.question_file), args.num_chunks, args.chunk_idx)
        shards: list[str] = []
        for pattern in args.shards:
            found = sorted(glob.glob(pattern), key=_rank) if glob.has_magic(pattern) else [pattern]
            if not found:
                raise MergeError(f"no file matches {pattern!r}")
            shards += found
        if not shards:
            shards = find_shards(args.answers_file)
        check_answers_paths([args.answers_file], {"--question-file": args.question_file,
                                                  **{f"shard {n}": s for n, s in enumerate(shards)}})
        n = merge_answers(keys, shards, args.answers_file)
    except (MergeError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    print(f"merged {len(shards)} shard(s), {n} answers -> {args.answers_file}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
