"""What every command's `--help` shares: a formatter that keeps usage examples and shows defaults,
and the names of the registered pruning methods, known without importing torch."""

from __future__ import annotations

import argparse

# The names `llava.pruning.list_methods()` returns, kept here so that `--help` and flag checks need
# no torch import; tests/pruning/test_registry.py asserts the two are equal.
METHOD_NAMES = ("cdpruner", "dart", "divprune", "fastervlm", "fastv", "fitprune", "pdrop", "random", "sparsevlm",
                "uniform", "visionzip", "vispruner", "vtc_cls")


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Description and epilog printed as written (examples stay intact); each flag's default shown."""


def method_choices_help(prefix: str = "registered pruning method") -> str:
    """Help text listing the registered methods."""
    return f"{prefix}: {', '.join(METHOD_NAMES)}"


def check_method_names(text: str, flag: str = "--pruning-method") -> list[str]:
    """The comma-separated method names of `text`; an unknown one is a ValueError listing the known ones."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown or not names:
        raise ValueError(f"{flag} {text!r}: unknown pruning method {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"available: {', '.join(METHOD_NAMES)}")
    return names
