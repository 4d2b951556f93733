"""Multi-process evaluation: which rank this process is, its device, its shard file, and one barrier.

`torchrun` and `accelerate launch` both start one process per rank with RANK, WORLD_SIZE and
LOCAL_RANK in the environment. Generation needs no communication: every rank answers its own
contiguous shard of the questions into its own answers file. torch.distributed is used for one thing
only, a barrier after which rank 0 merges the shard files; the process group (gloo on CPU, nccl on
GPU) is created only when WORLD_SIZE > 1, so a plain `python -m ...` run never touches it.
"""

from __future__ import annotations

import glob
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

# Ranks that finish early wait here for the slowest one, possibly for hours on a full benchmark.
DEFAULT_TIMEOUT_MIN = 24 * 60


@dataclass(frozen=True)
class World:
    """This process's place among the launched ones: rank in [0, size), local_rank on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "World":
        """The world torchrun / accelerate describe in RANK, WORLD_SIZE, LOCAL_RANK (a single process if unset)."""
        env = os.environ if environ is None else environ

        def read(name: str, default: int) -> int:
            value = env.get(name, "")
            if value == "":
                return default
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"environment variable {name}={value!r} is not an integer") from None

        size = read("WORLD_SIZE", 1)
        rank = read("RANK", 0)
        local_rank = read("LOCAL_RANK", rank if size > 1 else 0)
        if size < 1 or not 0 <= rank < size or local_rank < 0:
            raise ValueError(
                f"inconsistent launcher environment: RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local_rank}"
            )
        return cls(rank, size, local_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence) -> list:
        """This rank's contiguous, balanced part of `items` (may be empty when there are more ranks than items)."""
        from llava.eval.runner import balanced_chunk

        return balanced_chunk(items, self.size, self.rank)

    def device(self, requested: str | None) -> str:
        """The device of this rank: cuda:LOCAL_RANK for 'auto'/'cuda' when CUDA is present, else as requested."""
        if requested in (None, "auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}" if self.size > 1 else "cuda"
        return "cpu" if requested in (None, "auto") else requested


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


class _Group:
    """The handle `process_group` yields: a barrier that is a no-op for a single process."""

    def __init__(self, world: World, device: str, active: bool) -> None:
        self.world, self.device, self.active = world, device, active

    def barrier(self) -> None:
        if not self.active:
            return
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.device(self.device).index or 0])
        else:
            dist.barrier()


@contextmanager
def process_group(world: World, device: str, timeout_min: float = DEFAULT_TIMEOUT_MIN) -> Iterator[_Group]:
    """Initialise torch.distributed (env://) when world.size > 1 and tear it down afterwards."""
    if world.size == 1:
        yield _Group(world, device, active=False)
        return
    import torch.distributed as dist

    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={world.size} but this torch build has no torch.distributed")
    owned = not dist.is_initialized()
    if owned:
        use_nccl = str(device).startswith("cuda") and dist.is_nccl_available()
        if use_nccl:
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(
            backend="nccl" if use_nccl else "gloo", timeout=timedelta(minutes=timeout_min),
            rank=world.rank, world_size=world.size,
        )
    try:
        yield _Group(world, device, active=True)
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()
