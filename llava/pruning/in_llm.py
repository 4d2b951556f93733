"""The contract between the LLM loop and in-LLM pruning methods (FastV, PyramidDrop, DART, SparseVLM).

An in-LLM method says before which decoder layers it drops tokens and which layers' q/k it wants
to read; at each drop layer the loop hands it the current tokens (`LoopState`) and what the probe
captured, and it answers which tokens each row keeps. The loop does the removal from the hidden
states, so the layers after a drop really run on fewer tokens and store fewer keys in the cache.
A method may also add tokens at a drop (SparseVLM recycles pruned tokens into merged ones): they
enter the hidden states and the cache of the later layers like any kept token.
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
    sequence (-1 for padding, INSERTED or below for a token a method added at an earlier drop); rope: float32 (cos, sin) [B, T, Dh] of these positions;
    final_norm: the LLM's final norm (hidden [.., H] -> [.., H]), for methods that compare hidden
    states as the output head sees them (DART).
    mrope_ids: [3, B, T] the tokens' M-RoPE (t, h, w) positions when the LLM has them (Qwen-VL), which
    the rotary tables are built from; position_ids then hold each token's 1-D sequence index. None: 1-D RoPE.
    """

    hidden: torch.Tensor
    position_ids: torch.Tensor
    valid: torch.Tensor
    origin: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor] | None  # None when no method reads it (no dropper)
    final_norm: Callable[[torch.Tensor], torch.Tensor] | None = None
    mrope_ids: torch.Tensor | None = None

    def last_index(self) -> torch.Tensor:
        """[B] index of each row's last real token (the rows are left-padded)."""
        t = self.valid.shape[1]
        return t - 1 - self.valid.flip(-1).int().argmax(-1)


INSERTED = -2  # the origin of a token a method added (it stands for no prefill token)


@dataclass
class Inserted:
    """Tokens a method adds to one row at a drop, beside the kept ones.

    hidden: [M, H] their hidden states; slot: [M] long, each goes right before kept token `slot`
    of the row's `keep` list (len(keep): after the last one), tokens with equal slots in their order;
    position_ids: [M] long, their positions, or None when the method renumbers positions anyway;
    origin: the origin they get (one for all, or [M]): INSERTED or lower tags of the method's choice, to
    tell them apart at later drops.
    """

    hidden: torch.Tensor
    slot: torch.Tensor
    position_ids: torch.Tensor | None = None
    origin: int | torch.Tensor = INSERTED


class TokenDropper(Protocol):
    """One batch's in-LLM pruning plan."""

    drop_layers: tuple[int, ...]  # tokens are dropped before these decoder layers
    probe_layers: tuple[int, ...]  # layers whose q/k the method reads during the prefill; a drop layer
    # listed here is probed on the tokens entering it, before the drop (PyramidDrop scores that way)
    q_rows: slice | None  # query rows the probe keeps (None: all)
    # optional: renumber_positions = True gives the survivors of each drop consecutive positions
    # (PyramidDrop's official code); by default kept tokens keep their positions
    # optional: begin(state) is called once with the prefill's input tokens (the embeddings), before
    # layer 0 (SparseVLM picks its text raters there)
    # optional: inserted(layer, state) -> list[Inserted | None], called right after keep() with the
    # same state: per row, the tokens to add beside the kept ones (SparseVLM's recycled tokens)

    def keep(self, layer: int, state: LoopState, captured: dict[int, Captured],
             geometry: HeadGeometry) -> list[torch.Tensor]:
        """Per row, sorted indices into the current tokens that go on to `layer`."""
        ...

    def report(self) -> dict:
        """What was kept, for the answers' metadata."""
        ...
