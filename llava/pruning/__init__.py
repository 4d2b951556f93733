"""Visual-token pruning methods behind one registry (see docs/METHODS.md)."""

from .config import ANYRES_MODES, PruningConfig, check_visual_token_num
from .base import PruningMethod, Selection, VisionSignals, gather_tokens, topk_raster
from .signals import known_signals, register_signal
from .registry import get_method, list_methods, parse_method_args, register_method
from . import methods  # noqa: F401  (registers the built-in methods)

__all__ = [
    "ANYRES_MODES",
    "PruningConfig",
    "check_visual_token_num",
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
