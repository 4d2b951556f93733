"""The contract between the LLM loop and in-LLM pruning methods (FastV, PyramidDrop, DART, SparseVLM).

An in-LLM method says before which decoder layers it drops tokens and which layers' q/k it wants
to read; at each drop layer the loop hands it the current tokens (`LoopState`) and what the probe
captured, and it answers which tokens each row keeps. The loop does the removal from the hidden
states, so the layers after a drop really run on fewer tokens and store fewer keys in the cache.
A method may also add tokens at a drop (SparseVLM recycles pruned tokens into merged ones): they
enter the hidden states and the cache of the later layers like any kept token.

A model may also add residuals to the hidden states after given layers (Qwen3-VL's DeepStack
features, added at the visual tokens after its first layers): `OriginResiduals` holds them per
prefill token, and the loop gathers them by each current token's origin, so a token dropped before
such a layer takes its residual with it and no other token receives it.
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


class OriginResiduals:
    """Additions to the hidden states after some decoder layers, given per prefill token (the `after_layer` hook).

    per_layer: {layer index: [B, T0, H]} the addition to each prefill token (by its origin, its index in the
    prefill sequence; zeros where nothing is added). Called by the loop after layer i of the prefill as
    `residuals(i, state)`, it returns [B, T, H] for the current tokens, or None when layer i adds nothing.
    Padding, tokens a method added (origin < 0) and tokens past the prefill (origin >= T0, FastV's
    per-token rerun) get zeros.
    """

    def __init__(self, per_layer: dict[int, torch.Tensor]) -> None:
        self.per_layer = dict(per_layer)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted(self.per_layer))

    def __call__(self, layer: int, state: LoopState) -> torch.Tensor | None:
        table = self.per_layer.get(layer)
        if table is None:
            return None
        t0 = table.shape[1]
        origin = state.origin.to(table.device)
        inside = (origin >= 0) & (origin < t0) & state.valid.to(table.device)  # [B, T]
        index = origin.clamp(0, t0 - 1)[..., None].expand(-1, -1, table.shape[-1])  # [B, T, H]
        return table.gather(1, index) * inside[..., None].to(table.dtype)  # [B, T0, H] -> [B, T, H]


def make_dropper(pruning, image_spans, budgets: list, num_layers: int):
    """The token dropper of `pruning`'s in-LLM method for one batch, or None (a pre-LLM method, or no budget).

    pruning: a PruningConfig; image_spans / budgets: per row and per image, as the splice and encoder
    give them; num_layers: the LLM's depth. Unknown method arguments raise one line naming them.
    """
    from .registry import get_method

    method = get_method(pruning.method)
    if method.stage != "in_llm":
        return None
    args = {**method.defaults, **method.check_args(dict(pruning.args))}
    scheduled = not getattr(method.llm_pruner, "needs_budget", True)  # pdrop: the schedule is in its args
    if not scheduled and all(k is None for k in budgets) and args.get("ratio") is None:
        return None  # no budget: nothing to prune
    unknown = set(args) - set(method.defaults)
    if unknown:
        raise ValueError(f"pruning method {method.name!r}: unknown argument(s) {sorted(unknown)}")
    return method.llm_pruner(image_spans, budgets, num_layers, **args)
