"""Visual-token pruning methods behind one registry (see docs/METHODS.md)."""

from .base import PruningMethod, Selection, VisionSignals, gather_tokens, topk_raster
from .signals import known_signals, register_signal
from .registry import get_method, list_methods, parse_method_args, register_method
from . import methods  # noqa: F401  (registers the built-in methods)

__all__ = [
    "known_signals",
    "register_signal",
    "PruningMethod",
    "Selection",
    "VisionSignals",
    "gather_tokens",
    "topk_raster",
    "get_method",
    "list_methods",
    "parse_method_args",
    "register_method",
]
