"""Only `llava/probe.py` hooks q/k projections or computes softmax(q k^T) attention.

The check reads the syntax tree of every module of the `llava` package (strings and comments do
not count) and looks for two things:

- forward hooks on query/key projections: a `register_*hook` call on an attribute named like a
  projection (`q_proj`, `k_proj`, `qkv`, ...), on `getattr(x, <such a name>)`, or on a variable or
  `getattr` with a computed name inside a function that names such a projection; module-global
  hooks (`register_module_forward_hook`) are reported wherever they appear;
- attention maths: a softmax in the same function (nested functions included) as a matrix
  product (`@`, matmul, bmm, einsum, baddbmm), or any call of `scaled_dot_product_attention`.

The detector is first run on snippets of the code this rule replaced, so it is known to catch them.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llava"
PROBE = "llava/probe.py"

# Attribute names of query/key (or fused qkv) projections across the model families in use.
PROJECTION = re.compile(r"^(q|k|query|key|q_proj|k_proj|qkv|qkv_proj|in_proj|in_proj_weight|c_attn|Wqkv|wq|wk)$")
HOOK = re.compile(r"^register_.*hook$")
GLOBAL_HOOK = re.compile(r"^register_module_.*hook$")
PRODUCT_CALLS = {"matmul", "bmm", "einsum", "baddbmm"}


def _names_projection(node: ast.AST) -> bool:
    """`x.q_proj`, `getattr(x, "q_proj")`, `x["k_proj"]`."""
    if isinstance(node, ast.Attribute):
        return bool(PROJECTION.match(node.attr))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
        arg = node.args[1] if len(node.args) > 1 else None
        return isinstance(arg, ast.Constant) and isinstance(arg.value, str) and bool(PROJECTION.match(arg.value))
    if isinstance(node, ast.Subscript):
        key = node.slice
        return isinstance(key, ast.Constant) and isinstance(key.value, str) and bool(PROJECTION.match(key.value))
    return False


def _mentions_projection(scope: ast.AST) -> bool:
    """The scope reads a projection attribute or holds a projection's name as a string."""
    for node in ast.walk(scope):
        if isinstance(node, ast.Attribute) and PROJECTION.match(node.attr):
            return True
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and PROJECTION.match(node.value):
            return True
    return False


def _aliases(scope: ast.AST) -> set[str]:
    """Variables bound to a projection: `p = x.q_proj`, `for p in (x.q_proj, x.k_proj)`."""
    names = set()
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign) and _names_projection(node.value):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name):
            items = node.iter.elts if isinstance(node.iter, (ast.Tuple, ast.List)) else [node.iter]
            if any(_names_projection(i) for i in items):
                names.add(node.target.id)
    return names


def _scopes(tree: ast.Module) -> list[ast.AST]:
    """The module and every function in it (a function's scope includes its nested functions)."""
    return [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]


def _call_name(call: ast.Call) -> str | None:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None


def _own_nodes(scope: ast.AST):
    """Nodes of `scope`, without the bodies of functions defined in it when `scope` is the module."""
    if not isinstance(scope, ast.Module):
        yield from ast.walk(scope)
        return
    stack = list(scope.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            stack.extend(ast.iter_child_nodes(node))


def find_qk_hooks(source: str) -> list[int]:
    """Line numbers of forward hooks on q/k projections (and of module-global hooks)."""
    tree = ast.parse(source)
    lines = set()
    for scope in _scopes(tree):
        aliases, mentions = _aliases(scope), _mentions_projection(scope)
        for node in _own_nodes(scope):
            if not isinstance(node, ast.Call) or not _call_name(node):
                continue
            if GLOBAL_HOOK.match(_call_name(node)):
                lines.add(node.lineno)
                continue
            if not isinstance(node.func, ast.Attribute) or not HOOK.match(node.func.attr):
                continue
            target = node.func.value
            computed = isinstance(target, ast.Name) or (isinstance(target, ast.Call)
                                                        and _call_name(target) == "getattr")
            if _names_projection(target) or (isinstance(target, ast.Name) and target.id in aliases) or \
                    (computed and mentions):
                lines.add(node.lineno)
    return sorted(lines)


def find_attention_maths(source: str) -> list[int]:
    """Line numbers of softmax calls that share a function with a matrix product, and of SDPA calls."""
    tree = ast.parse(source)
    lines = set()
    for scope in _scopes(tree):
        nodes = list(_own_nodes(scope))
        softmax = [n for n in nodes if isinstance(n, ast.Call) and _call_name(n) == "softmax"]
        product = any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.MatMult) for n in nodes) or any(
            isinstance(n, ast.Call) and _call_name(n) in PRODUCT_CALLS for n in nodes)
        if product:
            lines |= {n.lineno for n in softmax}
        lines |= {n.lineno for n in nodes
                  if isinstance(n, ast.Call) and _call_name(n) == "scaled_dot_product_attention"}
    return sorted(lines)


CAUGHT_HOOKS = {
    "attribute": "def f(attn, fn):\n    return attn.q_proj.register_forward_hook(fn)\n",
    "fused": "def f(module, fn):\n    handles = [module.qkv.register_forward_pre_hook(fn)]\n",
    "alias": "def f(attn, fn):\n    proj = attn.k_proj\n    proj.register_forward_hook(fn)\n",
    "loop": "def f(attn, fn):\n    for p in (attn.q_proj, attn.k_proj):\n        p.register_forward_hook(fn)\n",
    "computed name": "def f(attn, fn):\n    for name in ('q_proj', 'k_proj'):\n"
                     "        getattr(attn, name).register_forward_hook(fn)\n",
    "constant getattr": "h = getattr(layer.self_attn, 'k_proj').register_forward_hook(print)\n",
    "global": "from torch.nn.modules.module import register_module_forward_hook\n"
              "h = register_module_forward_hook(print)\n",
}
CAUGHT_MATHS = {
    "matmul": """
        def rows(q, k, scale):
            scores = torch.matmul(q, k.transpose(-1, -2)) * scale
            return scores.masked_fill(mask, float("-inf")).softmax(dim=-1)
        """,
    "operator": "def f(q, k):\n    return (q @ k.mT).softmax(-1)\n",
    "einsum in a nested function": """
        def outer(q, k):
            def inner():
                return torch.softmax(torch.einsum("bhqd,bhkd->bhqk", q, k), dim=-1)
            return inner()
        """,
    "sdpa": "out = torch.nn.functional.scaled_dot_product_attention(q, k, v)\n",
}
NOT_CAUGHT = {
    "sampling": "def f(scores):\n    return torch.multinomial(scores.softmax(dim=-1), 1)\n",
    "similarity": "def f(unit):\n    return 1.0 - unit @ unit.transpose(1, 2)\n",
    "other hook": "def f(layer, fn):\n    return layer.register_forward_pre_hook(fn)\n",
    "attention module hook": "def f(layer, fn):\n    return layer.self_attn.register_forward_hook(fn)\n",
    "separate functions": "def a(x, w):\n    return x @ w\n\ndef b(s):\n    return s.softmax(-1)\n",
}


@pytest.mark.parametrize("name", sorted(CAUGHT_HOOKS))
def test_detector_catches_qk_hooks(name):
    assert find_qk_hooks(CAUGHT_HOOKS[name]), name


@pytest.mark.parametrize("name", sorted(CAUGHT_MATHS))
def test_detector_catches_attention_maths(name):
    assert find_attention_maths(textwrap.dedent(CAUGHT_MATHS[name])), name


@pytest.mark.parametrize("name", sorted(NOT_CAUGHT))
def test_detector_leaves_other_code_alone(name):
    source = NOT_CAUGHT[name]
    assert find_qk_hooks(source) == [] and find_attention_maths(source) == [], name


def _scan() -> dict[str, dict[str, list[int]]]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        hits = {"hooks": find_qk_hooks(source), "maths": find_attention_maths(source)}
        if any(hits.values()):
            found[path.relative_to(PACKAGE.parent).as_posix()] = hits
    return found


def test_only_the_probe_hooks_qk_and_computes_attention():
    found = _scan()
    outside = {path: hits for path, hits in found.items() if path != PROBE}
    assert outside == {}, f"q/k hooks or attention maths outside {PROBE} (use llava.probe instead): {outside}"
    # The probe itself is seen by the same rules, so the scan really reads the package.
    assert found[PROBE]["hooks"] and found[PROBE]["maths"]
