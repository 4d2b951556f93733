"""Eval plumbing imports one way only: sharding at the bottom, merge and distributed above it, runner on top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

EVAL = Path(__file__).resolve().parents[2] / "llava" / "eval"
# module -> the llava.eval plumbing modules it may import (anywhere in the file, function bodies included)
ALLOWED = {
    "sharding": set(),
    "answers_writer": set(),
    "io_utils": set(),
    "merge": {"answers_writer", "io_utils", "sharding"},
    "distributed": {"sharding"},
    "runner": {"answers_writer", "distributed", "merge", "sharding"},
}


def eval_imports(module: str) -> set[str]:
    """The llava.eval.<name> modules that `module` imports, at top level or inside functions."""
    tree = ast.parse((EVAL / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            name = node.module
            if node.level:  # relative: from .x import y
                name = "llava.eval." + name
            if name.startswith("llava.eval."):
                found.add(name.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("llava.eval.")}
    return found


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_plumbing_imports_point_downward(module):
    plumbing = eval_imports(module) & set(ALLOWED)
    assert plumbing <= ALLOWED[module], f"{module} imports {sorted(plumbing - ALLOWED[module])} (upward)"


def test_runner_reexports_the_chunking_it_uses():
    from llava.eval import runner, sharding

    assert runner.balanced_chunk is sharding.balanced_chunk
    assert sharding.balanced_chunk(list(range(5)), 2, 0) == [0, 1, 2]
