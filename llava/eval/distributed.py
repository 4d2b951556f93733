"""Multi-process evaluation: which rank this process is, its device, its shard file, and one barrier.

`torchrun` and `accelerate launch` both start one process per rank with RANK, WORLD_SIZE and
LOCAL_RANK in the environment. Generation needs no communication: every rank answers its own
contiguous shard of the questions into its own answers file. torch.distributed is used for one thing
only, a barrier after which rank 0 merges the shard files; the process group (gloo on CPU, nccl on
GPU) is created only when WORLD_SIZE > 1, so a plain `python -m ...` run never touches it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterator, Mapping, Sequence

import torch

from llava.eval.sharding import balanced_chunk

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
        return balanced_chunk(items, self.size, self.rank)

    def device(self, requested: str | None) -> str:
        """The device of this rank: cuda:LOCAL_RANK for 'auto'/'cuda' when CUDA is present, else as requested."""
        if requested in (None, "auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank}" if self.size > 1 else "cuda"
        return "cpu" if requested in (None, "auto") else requested


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
