"""The contract between the vision tower and the token selectors.

A selector never sees LLaVA, checkpoints or CLIP classes: it gets a `VisionSignals` bundle and a
budget K and returns a `Selection`. Signals other than the patch features are optional and are
computed by the vision tower only when the chosen method names them in `needs`.
"""

from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from .signals import CLS_STAND_IN_ARG, STAND_IN_AUTO, check_stand_in, known_signals, signal_spec

# Names of the built-in signals (see `signals.py` for what each one is and how it is computed).
SIGNAL_CLS_ATTN = "cls_attn"  # [B, N]   head-mean [CLS]->patch attention at the selected layer
SIGNAL_CLS_ATTN_LAYERS = "cls_attn_layers"  # [B, L, N] the same row for every layer up to the selected one
SIGNAL_KEYS = "keys"  # [B, N, Dh] head-mean keys of the patches at the selected layer
SIGNAL_MEAN_ATTN = "mean_attn"  # [B, N] attention each patch receives from all queries (no [CLS] needed)
SIGNAL_SCORES = "scores"  # [B, N] scores computed outside the tower (FastV inside the LLM)
SIGNAL_CLS_FEATURE = "cls_feature"  # [B, D] the [CLS] token's feature at the selected layer
SIGNAL_PROJECTED = "projected"  # [B, N, H] the projector's output for every patch (filled in by the model)
SIGNAL_TEXT_RELEVANCE = "text_relevance"  # [B, N] patch-question CLIP cosine (filled in by the model, per question)


class VisionSignals:
    """What the vision tower hands to a selector, for a batch of B images of N patches each.

    features: [B, N, D] patch features of the selected layer (no [CLS]), before the projector.
    Every registered signal (`signals.known_signals()`) reads as an attribute: the tensor when the
    tower computed it, None otherwise. `values` holds the computed ones by name.
    """

    def __init__(self, features: torch.Tensor, **values: torch.Tensor | None) -> None:
        for name in values:
            signal_spec(name)  # unknown names raise
        self.features = features
        self.values = {name: v for name, v in values.items() if v is not None}

    def __getattr__(self, name: str):
        values = self.__dict__.get("values", {})
        if name in values:
            return values[name]
        if name in known_signals():
            return None
        raise AttributeError(f"VisionSignals has no signal {name!r}; known: {sorted(known_signals())}")

    @property
    def num_patches(self) -> int:
        return self.features.shape[1]

    def index(self, rows: slice | list[int] | torch.Tensor) -> "VisionSignals":
        """The signals of a subset of the batch (rows along dim 0)."""
        return VisionSignals(self.features[rows], **{n: v[rows] for n, v in self.values.items()})

    def with_values(self, **values: torch.Tensor) -> "VisionSignals":
        """A new bundle with `values` added (or replaced); `self` is left as it is."""
        return VisionSignals(self.features, **{**self.values, **values})

    def gather(self, image: torch.Tensor, patch: torch.Tensor) -> "VisionSignals":
        """One candidate set from several images: the (image[m], patch[m]) pairs -> a batch of 1 of M patches."""

        def pick(t: torch.Tensor, axis: int | None) -> torch.Tensor:
            if axis is None:  # a per-image signal: the first gathered image's value
                return t[image[:1].to(t.device)]
            moved = t.movedim(axis, 1)  # [B, N, ...]
            return moved[image.to(t.device), patch.to(t.device)].unsqueeze(0).movedim(1, axis)

        return VisionSignals(pick(self.features, 1),
                             **{n: pick(v, signal_spec(n).patch_axis) for n, v in self.values.items()})


@dataclass
class Selection:
    """A selector's answer for B images and budget K.

    indices: [B, M] long, sorted ascending, unique, in [0, N): the raster positions kept (the
             kept-patch map). M = K, less the tokens that stand at no patch (see `token_patch`).
    tokens:  [B, K, D] or None. Merging methods put their new tokens here, in the order they enter
             the LLM; when None, the kept features are `features` gathered at `indices`.
    token_patch: [B, K] long or None: the patch each token of `tokens` stands at, -1 for a token
             that stands at none (VisionZip's [CLS] token). None: the tokens follow `indices`.
    """

    indices: torch.Tensor
    tokens: torch.Tensor | None = None
    token_patch: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        """K: the visual tokens per image this selection hands to the projector."""
        return self.indices.shape[1] if self.tokens is None else self.tokens.shape[1]

    def tokens_in_patch_order(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens at no patch [B, K - M, D], tokens at `indices` in raster order [B, M, D]); needs `tokens`.

        For layouts that place every token at its patch's slot (LLaVA-NeXT's anyres grid).
        """
        if self.token_patch is None:
            return self.tokens[:, :0], self.tokens
        extra = int((self.token_patch[0] < 0).sum())
        # -1 sorts first; a stable sort keeps the no-patch tokens in their own order.
        order = self.token_patch.argsort(dim=-1, stable=True)  # [B, K]
        ordered = gather_tokens(self.tokens, order)
        return ordered[:, :extra], ordered[:, extra:]


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
    # Options (in `defaults`) that choose the signals rather than steer `fn`: the model reads them
    # (e.g. `cls_stand_in`), and `select` does not pass them to `fn`.
    signal_options: frozenset[str] = field(default_factory=frozenset)

    @property
    def question_dependent(self) -> bool:
        """Whether the kept tokens depend on the question: in-LLM methods, and methods reading the question text."""
        return self.stage == "in_llm" or SIGNAL_TEXT_RELEVANCE in self.needs

    def select(self, signals: VisionSignals, k: int, **kwargs) -> Selection:
        """Run the method on `signals` with budget `k` (int >= 1); `kwargs` override `defaults`."""
        kwargs = self.check_args(kwargs)
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
        args = {key: v for key, v in {**self.defaults, **kwargs}.items() if key not in self.signal_options}
        return self.fn(signals, k, **args)

    def check_args(self, args: dict) -> dict:
        """`args` checked against the method's `defaults`: the one place method options are validated.

        An unknown key, or a value whose type does not fit the option (the type of its default, or
        of its annotation when the default is None), is a ValueError naming the method, the key, the
        value and the expected type. Ints are accepted for float options and returned as floats.
        """
        unknown = set(args) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"pruning method {self.name!r}: unknown argument(s) {sorted(unknown)}; "
                f"it takes {sorted(self.defaults) or 'no arguments'}"
            )
        checked = {key: self._check_value(key, value) for key, value in args.items()}
        if CLS_STAND_IN_ARG in checked and checked[CLS_STAND_IN_ARG] != STAND_IN_AUTO:
            try:
                check_stand_in(checked[CLS_STAND_IN_ARG])
            except ValueError as err:
                raise ValueError(f"pruning method {self.name!r}: {err}; fix --pruning-args") from None
        return checked

    def _check_value(self, key: str, value):
        default = self.defaults[key]
        expected = _option_types(self.fn, key, default)
        if not expected or (value is None and default is None):
            return value
        if str in expected and value is not None:
            return value if isinstance(value, str) else str(value)  # `--pruning-args name=7` parses as an int
        is_bool = isinstance(value, bool)
        if bool in expected and is_bool:
            return value
        if not is_bool and int in expected and isinstance(value, numbers.Integral):
            return int(value)
        if not is_bool and float in expected and isinstance(value, numbers.Real):
            return float(value)  # ints (and numpy scalars) are fine for a float option
        names = " or ".join(t.__name__ for t in expected) + (" or None" if default is None else "")
        raise ValueError(
            f"pruning method {self.name!r}: argument {key}={value!r} must be {_article(names)} {names} "
            f"(default {default!r}); fix --pruning-args"
        )


_OPTION_TYPES = (bool, int, float, str)


def _option_types(fn: Callable, key: str, default) -> list[type]:
    """The types an option accepts: its default's, or those its annotation names when the default is None."""
    if default is not None:
        return [type(default)] if type(default) in _OPTION_TYPES else []
    import inspect

    param = inspect.signature(fn).parameters.get(key)
    annotation = "" if param is None or param.annotation is inspect.Parameter.empty else str(param.annotation)
    words = set(annotation.replace("|", " ").replace("Optional[", " ").replace("]", " ").split())
    return [t for t in _OPTION_TYPES if t.__name__ in words]


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


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
