"""`PruningConfig`: the pruning settings of a call as one frozen, hashable value.

A model holds a default value (`model.pruning`, set by `set_pruning`), a block can use another
(`with model.pruning_config(cfg): ...`), and a single call can pass its own (`generate(...,
pruning=cfg)`). Nothing about pruning lives on `model.config`.

The budget is either K (`visual_token_num`, kept tokens per image; None keeps all) or a reduction
ratio r in [0, 1) resolved per image against that image's token count N: K = max(1, round(N * (1 - r))).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Mapping

ANYRES_MODES = ("faithful", "paper")
# How a video's budget is spent: K per frame ("frame", FasterVLM's table) or T x K over all frames jointly.
VIDEO_MODES = ("frame", "temporal")
# Where kept visual tokens sit in the LLM (families with multi-axis positions, Qwen-VL): "keep" their
# unpruned positions, or "compact" (renumbered as if the pruned tokens never existed). None: the family's default.
POSITION_MODES = ("keep", "compact")

# Names under which releases before PruningConfig stored the settings in config.json.
LEGACY_CONFIG_KEYS = ("visual_token_num", "pruning_method", "pruning_args", "anyres_mode")

MethodArgs = tuple[tuple[str, Any], ...]


def check_visual_token_num(value, name: str = "visual_token_num") -> int | None:
    """Validate one budget K: None (keep all) or an integer >= 1. Anything else raises ValueError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer() and value >= 1:
            return int(value)
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be >= 1 (K kept visual tokens per image), got {value}")
    return int(value)


def _freeze_args(method: str, args) -> MethodArgs:
    """Method args as sorted (key, value) pairs, checked against the method's registered defaults."""
    from .registry import get_method, parse_method_args

    if args is None:
        args = {}
    elif isinstance(args, str):
        args = parse_method_args(args)
    elif not isinstance(args, Mapping):
        try:
            args = dict(args)
        except (TypeError, ValueError):
            raise ValueError(f"PruningConfig.method_args must be a mapping, key=value text or pairs, "
                             f"got {args!r}") from None
    defaults = get_method(method).defaults
    unknown = sorted(set(args) - set(defaults))
    if unknown:
        raise ValueError(f"PruningConfig.method_args: method {method!r} has no argument(s) {unknown}; "
                         f"it takes {sorted(defaults) or 'no arguments'}")
    for key, value in args.items():
        try:
            hash(value)
        except TypeError:
            raise ValueError(f"PruningConfig.method_args[{key!r}] must be a scalar (hashable), got {value!r}") from None
    return tuple(sorted(args.items()))


@dataclass(frozen=True)
class PruningConfig:
    """How visual tokens are pruned in one call.

    method: a registered pruning method (`llava.pruning.list_methods()`).
    visual_token_num: K kept per image (None keeps all); exclusive with `ratio`.
    ratio: reduction ratio r in [0, 1); K = max(1, round(N * (1 - r))) for an image of N tokens.
    method_args: options of the method (a mapping, "a=1,b=2" text or pairs; stored as sorted pairs).
    anyres_mode: LLaVA-NeXT pruning, 'faithful' (one budget per image, unmodified model) or 'paper'
        (FasterVLM's fixed 2x2 grid, K per view).
    video_mode: videos (Video-LLaVA), 'frame' (K per frame, each frame scored on its own) or
        'temporal' (T x K tokens chosen jointly over the T frames).
    position_mode: where kept visual tokens sit, 'keep' (their unpruned positions) or 'compact'
        (renumbered as if the pruned tokens never existed); None is the family's default. Read by
        the Qwen-VL families; the LLaVA layouts number positions 1-D after the cut (compact) and
        refuse 'keep'.
    """

    method: str = "fastervlm"
    visual_token_num: int | None = None
    ratio: float | None = None
    method_args: MethodArgs = ()
    anyres_mode: str = "faithful"
    video_mode: str = "frame"
    position_mode: str | None = None

    def __post_init__(self) -> None:
        from .registry import get_method

        if not isinstance(self.method, str):
            raise ValueError(f"PruningConfig.method must be a method name, got {self.method!r}")
        try:
            get_method(self.method)
        except ValueError as err:
            raise ValueError(f"PruningConfig.method: {err}") from None
        if isinstance(self.visual_token_num, (list, tuple)):
            raise ValueError(f"PruningConfig.visual_token_num must be one integer, got {self.visual_token_num!r}; "
                             "pass per-image lists as generate(..., visual_token_num=[...])")
        object.__setattr__(self, "visual_token_num",
                           check_visual_token_num(self.visual_token_num, "PruningConfig.visual_token_num"))
        if self.ratio is not None:
            if isinstance(self.ratio, bool) or not isinstance(self.ratio, numbers.Real) or not 0 <= self.ratio < 1:
                raise ValueError(f"PruningConfig.ratio must be a reduction ratio in [0, 1), got {self.ratio!r}")
            if self.visual_token_num is not None:
                raise ValueError(f"PruningConfig: give visual_token_num ({self.visual_token_num}) or ratio "
                                 f"({self.ratio}), not both")
            object.__setattr__(self, "ratio", float(self.ratio))
        object.__setattr__(self, "method_args", _freeze_args(self.method, self.method_args))
        if self.anyres_mode not in ANYRES_MODES:
            raise ValueError(f"PruningConfig.anyres_mode must be one of {ANYRES_MODES}, not {self.anyres_mode!r}")
        if self.video_mode not in VIDEO_MODES:
            raise ValueError(f"PruningConfig.video_mode must be one of {VIDEO_MODES}, not {self.video_mode!r}")
        if self.position_mode is not None and self.position_mode not in POSITION_MODES:
            raise ValueError(f"PruningConfig.position_mode must be one of {POSITION_MODES} or None, "
                             f"not {self.position_mode!r}")

    @property
    def args(self) -> dict:
        """The method args as a fresh dict (without the method's defaults)."""
        return dict(self.method_args)

    @property
    def prunes(self) -> bool:
        """Whether a budget is set at all (K or a ratio)."""
        return self.visual_token_num is not None or self.ratio is not None

    def replace(self, **changes) -> "PruningConfig":
        """A copy with `changes` applied, validated again. Changing K clears the ratio and vice versa."""
        if "visual_token_num" in changes and "ratio" not in changes:
            changes["ratio"] = None
        elif "ratio" in changes and "visual_token_num" not in changes:
            changes["visual_token_num"] = None
        return dataclasses.replace(self, **changes)

    def budget(self, num_tokens: int) -> int | None:
        """K for an image of `num_tokens` candidate tokens (None: keep all)."""
        if self.ratio is not None:
            return max(1, round(num_tokens * (1 - self.ratio)))
        return self.visual_token_num

    def to_metadata(self) -> dict:
        """The settings as plain JSON values, for answers' metadata."""
        out = {"visual_token_num": self.visual_token_num, "pruning_method": self.method,
               "pruning_args": self.args}
        if self.ratio is not None:
            out["pruning_ratio"] = self.ratio
        if self.video_mode != "frame":
            out["video_mode"] = self.video_mode
        if self.position_mode is not None:
            out["position_mode"] = self.position_mode
        return out

    @classmethod
    def from_legacy(cls, fields: Mapping[str, Any]) -> "PruningConfig":
        """The value stored by older releases in config.json (`LEGACY_CONFIG_KEYS`)."""
        return cls(
            method=fields.get("pruning_method") or "fastervlm",
            visual_token_num=fields.get("visual_token_num"),
            method_args=fields.get("pruning_args") or (),
            anyres_mode=fields.get("anyres_mode") or "faithful",
        )
