"""The contract between the LLM loop and in-LLM pruning methods (FastV, PyramidDrop, DART).

An in-LLM method says before which decoder layers it drops tokens and which layers' q/k it wants
to read; at each drop layer the loop hands it the current tokens (`LoopState`) and what the probe
captured, and it answers which tokens each row keeps. The loop does the removal from the hidden
states, so the layers after a drop really run on fewer tokens and store fewer keys in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from llava.probe import Captured, HeadGeometry


@dataclass
class LoopState:
    """The tokens entering a decoder layer during the prefill.

    hidden: [B, T, H]; position_ids: [B, T] (kept tokens keep their unpruned positions);
    valid: [B, T] bool (False: padding); origin: [B, T] long, each token's index in the prefill
    sequence (-1 for padding); rope: float32 (cos, sin) [B, T, Dh] of these positions;
    final_norm: the LLM's final norm (hidden [.., H] -> [.., H]), for methods that compare hidden
    states as the output head sees them (DART).
    """

    hidden: torch.Tensor
    position_ids: torch.Tensor
    valid: torch.Tensor
    origin: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor] | None  # None when no method reads it (no dropper)
    final_norm: Callable[[torch.Tensor], torch.Tensor] | None = None

    def last_index(self) -> torch.Tensor:
        """[B] index of each row's last real token (the rows are left-padded)."""
        t = self.valid.shape[1]
        return t - 1 - self.valid.flip(-1).int().argmax(-1)


class TokenDropper(Protocol):
    """One batch's in-LLM pruning plan."""

    drop_layers: tuple[int, ...]  # tokens are dropped before these decoder layers
    probe_layers: tuple[int, ...]  # layers whose q/k the method reads during the prefill; a drop layer
    # listed here is probed on the tokens entering it, before the drop (PyramidDrop scores that way)
    q_rows: slice | None  # query rows the probe keeps (None: all)
    # optional: renumber_positions = True gives the survivors of each drop consecutive positions
    # (PyramidDrop's official code); by default kept tokens keep their positions

    def keep(self, layer: int, state: LoopState, captured: dict[int, Captured],
             geometry: HeadGeometry) -> list[torch.Tensor]:
        """Per row, sorted indices into the current tokens that go on to `layer`."""
        ...

    def report(self) -> dict:
        """What was kept, for the answers' metadata."""
        ...
