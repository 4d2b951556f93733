"""How questions are split into chunks and ranks, and how per-rank answers files are named.

The bottom of the evaluation layering: `merge` (checked merge), `distributed` (ranks and the barrier)
and `runner` (the drivers' shared loop) all import from here, and this module imports none of them.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Sequence


def balanced_chunk(items: Sequence, num_chunks: int, chunk_idx: int) -> list:
    """The chunk_idx-th of num_chunks contiguous shards whose sizes differ by at most one (may be empty)."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"--chunk-idx {chunk_idx} must be in [0, --num-chunks {num_chunks})")
    base, extra = divmod(len(items), num_chunks)
    start = chunk_idx * base + min(chunk_idx, extra)
    return list(items[start : start + base + (1 if chunk_idx < extra else 0)])


def shard_path(answers_file: str | os.PathLike, rank: int, size: int) -> str:
    """`<dir>/<stem>.rank{r}-of-{n}<suffix>`: rank r's own answers file, beside the merged one."""
    path = Path(answers_file)
    suffix = path.suffix or ".jsonl"
    return str(path.with_name(f"{path.stem if path.suffix else path.name}.rank{rank}-of-{size}{suffix}"))


_SHARD_RE = re.compile(r"\.rank(\d+)-of-(\d+)(\.[^.]*)$")


def find_shards(answers_file: str | os.PathLike) -> list[str]:
    """The shard files of one world size beside `answers_file`, in rank order; errors if ambiguous or incomplete."""
    path = Path(answers_file)
    stem = path.stem if path.suffix else path.name
    by_size: dict[int, dict[int, str]] = {}
    for cand in path.parent.glob(f"{glob.escape(stem)}.rank*-of-*"):
        m = _SHARD_RE.search(cand.name)
        if m and cand.name[: m.start()] == stem:
            by_size.setdefault(int(m.group(2)), {})[int(m.group(1))] = str(cand)
    if not by_size:
        raise FileNotFoundError(f"no shard files {stem}.rank<r>-of-<n>* found in {path.parent}")
    if len(by_size) > 1:
        raise ValueError(
            f"shard files of several world sizes {sorted(by_size)} beside {path}; pass the ones to merge explicitly"
        )
    size, ranks = next(iter(by_size.items()))
    missing = sorted(set(range(size)) - set(ranks))
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {size} shard files of {path} are missing (ranks {missing[:20]}); "
            "on a multi-node run the answers folder must be shared, or copy every node's shard files here"
        )
    return [ranks[r] for r in range(size)]
