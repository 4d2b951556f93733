"""The contract between the vision tower and the token selectors.

A selector never sees LLaVA, checkpoints or CLIP classes: it gets a `VisionSignals` bundle and a
budget K and returns a `Selection`. Signals other than the patch features are optional and are
computed by the vision tower only when the chosen method names them in `needs`.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

# Names of the signals a method may ask the vision tower for.
SIGNAL_CLS_ATTN = "cls_attn"  # [B, N]   head-mean [CLS]->patch attention at the selected layer
SIGNAL_CLS_ATTN_LAYERS = "cls_attn_layers"  # [B, L, N] the same row for every layer up to the selected one
SIGNAL_KEYS = "keys"  # [B, N, Dh] head-mean keys of the patches at the selected layer
KNOWN_SIGNALS = frozenset({SIGNAL_CLS_ATTN, SIGNAL_CLS_ATTN_LAYERS, SIGNAL_KEYS})


@dataclass
class VisionSignals:
    """What the vision tower hands to a selector, for a batch of B images of N patches each.

    features: [B, N, D] patch features of the selected layer (no [CLS]), before the projector.
    cls_attn: [B, N] or None.
    cls_attn_layers: [B, L, N] or None.
    keys: [B, N, Dh] or None.
    scores: [B, N] or None: scores computed outside the vision tower for methods that score elsewhere
            (FastV's last-token attention inside the LLM).
    """

    features: torch.Tensor
    cls_attn: torch.Tensor | None = None
    cls_attn_layers: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    scores: torch.Tensor | None = None

    @property
    def num_patches(self) -> int:
        return self.features.shape[1]

    def index(self, rows: slice | list[int] | torch.Tensor) -> "VisionSignals":
        """The signals of a subset of the batch (rows along dim 0)."""
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return VisionSignals(
            pick(self.features), pick(self.cls_attn), pick(self.cls_attn_layers), pick(self.keys), pick(self.scores)
        )


@dataclass
class Selection:
    """A selector's answer for B images and budget K.

    indices: [B, K] long, sorted ascending, unique, in [0, N): the raster positions kept.
    tokens:  [B, K, D] or None. Merging methods put their new tokens here (in the order of
             `indices`); when None, the kept features are `features` gathered at `indices`.
    """

    indices: torch.Tensor
    tokens: torch.Tensor | None = None


class SelectFn(Protocol):
    def __call__(self, signals: VisionSignals, k: int, **kwargs) -> Selection: ...


@dataclass(frozen=True)
class PruningMethod:
    """A registered method: its name, the stage where it acts, the signals it needs, and its function."""

    name: str
    fn: Callable[..., Selection]
    stage: str = "pre_llm"  # "pre_llm" or "in_llm"
    needs: frozenset[str] = field(default_factory=frozenset)
    defaults: dict = field(default_factory=dict)
    description: str = ""
    llm_pruner: type | None = None  # in-LLM methods: the hook class the LLM wrapper installs

    def select(self, signals: VisionSignals, k: int, **kwargs) -> Selection:
        """Run the method on `signals` with budget `k` (int >= 1); `kwargs` override `defaults`."""
        unknown = set(kwargs) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"pruning method {self.name!r}: unknown argument(s) {sorted(unknown)}; "
                f"it takes {sorted(self.defaults) or 'no arguments'}"
            )
        bad_k = ValueError(f"pruning method {self.name!r}: budget k must be an int >= 1, got {k!r}")
        if isinstance(k, bool):
            raise bad_k
        try:
            k = operator.index(k)  # accepts int-like budgets (numpy ints, 0-d int tensors), rejects floats
        except TypeError:
            raise bad_k from None
        if k < 1:
            raise bad_k
        missing = sorted(name for name in self.needs if getattr(signals, name, None) is None)
        if missing:
            raise ValueError(
                f"pruning method {self.name!r} needs the signal(s) {missing} from the vision tower, "
                "but they are None"
            )
        return self.fn(signals, k, **{**self.defaults, **kwargs})


def gather_tokens(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """features [B, N, D], indices [B, K] -> [B, K, D]."""
    return features.gather(1, indices.unsqueeze(-1).expand(-1, -1, features.shape[-1]))


def topk_raster(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k highest scores per row, returned in raster (ascending) order.

    scores: [B, N] -> [B, K]. Ties go to the lower index, so the result is deterministic.
    """
    n = scores.shape[-1]
    if k >= n:
        return torch.arange(n, device=scores.device).expand(scores.shape[0], n).clone()
    # A stable descending sort keeps equal scores in index order; topk gives no such promise.
    order = torch.sort(scores.float(), dim=-1, descending=True, stable=True).indices[:, :k]
    return order.sort(dim=-1).values
