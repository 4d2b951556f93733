"""Registry of pruning methods: `@register_method(name)`, `get_method(name)`, `list_methods()`."""

from __future__ import annotations

from typing import Callable, Iterable

from .base import PruningMethod
from .signals import known_signals

_REGISTRY: dict[str, PruningMethod] = {}


def register_method(
    name: str,
    *,
    stage: str = "pre_llm",
    needs: Iterable[str] = (),
    defaults: dict | None = None,
    description: str = "",
    llm_pruner: type | None = None,
    signal_options: dict | None = None,
) -> Callable:
    """Decorator that registers `fn(signals, k, **kwargs) -> Selection` under `name`.

    signal_options: options with their defaults that choose the method's signals (the model reads
    them; `fn` never sees them), e.g. {"cls_stand_in": "auto"}. They are validated like `defaults`.
    """
    needs = frozenset(needs)
    signal_options = dict(signal_options or {})
    if not needs <= known_signals():
        raise ValueError(f"method {name!r} needs unknown signals {sorted(needs - known_signals())}")
    if stage not in ("pre_llm", "in_llm"):
        raise ValueError(f"method {name!r}: stage must be 'pre_llm' or 'in_llm', not {stage!r}")

    def wrap(fn: Callable) -> Callable:
        if name in _REGISTRY:
            raise ValueError(f"pruning method {name!r} is registered twice")
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        if stage == "in_llm" and llm_pruner is None:
            raise ValueError(f"in-LLM method {name!r} needs an llm_pruner hook class")
        clash = sorted(set(signal_options) & set(defaults or {}))
        if clash:
            raise ValueError(f"method {name!r}: option(s) {clash} are both signal options and method options")
        _REGISTRY[name] = PruningMethod(name, fn, stage, needs, {**(defaults or {}), **signal_options}, doc,
                                        llm_pruner, frozenset(signal_options))
        return fn

    return wrap


def list_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    return sorted(_REGISTRY)


def get_method(name: str) -> PruningMethod:
    """The method registered as `name`; a ValueError lists the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown pruning method {name!r}; available: {', '.join(list_methods())}") from None


def parse_method_args(text: str | None, method: str | None = None) -> dict:
    """Parse `--pruning-args "a=1,b=0.5,c=name,d=8:16:24"` into a dict of int/float/bool/str values.

    A value of ':'-separated numbers is a list option and parses to a tuple (`8:16:24` -> (8, 16, 24));
    any other value holding ':' (a path, a time) stays a string.

    With `method`, the values are also checked against that method's options
    (`PruningMethod.check_args`: unknown keys and wrong types are ValueErrors naming them).
    """
    out: dict = {}
    if text:
        out = _parse_items(text)
    return get_method(method).check_args(out) if method is not None else out


def _parse_items(text: str) -> dict:
    out: dict = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise ValueError(f"--pruning-args item {item!r} is not of the form key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        out[key] = _parse_value(value)
    return out


def _parse_value(value: str):
    if ":" in value:
        parts = [_parse_scalar(v.strip()) for v in value.split(":")]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parts)
        return tuple(parts) if numbers else value
    return _parse_scalar(value)


def _parse_scalar(value: str):
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value
