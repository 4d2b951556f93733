"""Registry lookups, argument checking and `--pruning-args` parsing."""

from __future__ import annotations

import pytest

from llava.pruning import VisionSignals, get_method, list_methods, parse_method_args, register_method
from llava.pruning.registry import _REGISTRY


def test_unknown_method_lists_available():
    with pytest.raises(ValueError) as err:
        get_method("no_such_method")
    for name in list_methods():
        assert name in str(err.value)


def test_unknown_argument_lists_accepted(make_signals):
    method = get_method("vispruner")
    with pytest.raises(ValueError) as err:
        method.select(make_signals(method.needs, b=1, n=16), 4, importance=0.3)
    assert "importance" in str(err.value)
    assert "important_ratio" in str(err.value) and "step" in str(err.value)
    with pytest.raises(ValueError, match="no arguments"):
        get_method("divprune").select(make_signals((), b=1, n=16), 4, seed=1)


def test_register_rejects_duplicates_and_unknown_signals():
    with pytest.raises(ValueError, match="registered twice"):
        register_method("fastervlm")(lambda signals, k: None)
    with pytest.raises(ValueError, match="unknown signals"):
        register_method("bad_needs", needs=["pixels"])
    with pytest.raises(ValueError, match="stage"):
        register_method("bad_stage", stage="post_llm")
    assert "bad_needs" not in _REGISTRY and "bad_stage" not in _REGISTRY


def test_parse_method_args_types():
    parsed = parse_method_args("a=1, b=0.5,c=name, d=True,e=false,f=-3,g=1e-3, h=")
    assert parsed == {"a": 1, "b": 0.5, "c": "name", "d": True, "e": False, "f": -3, "g": 1e-3, "h": ""}
    assert type(parsed["a"]) is int and type(parsed["b"]) is float and type(parsed["d"]) is bool
    assert parse_method_args(None) == {} and parse_method_args("") == {} and parse_method_args(" , ") == {}
    assert parse_method_args("path=a=b") == {"path": "a=b"}
    with pytest.raises(ValueError, match="key=value"):
        parse_method_args("oops")


def test_parsed_args_reach_the_method(make_signals):
    args = parse_method_args("important_ratio=1.0")
    signals = make_signals({"cls_attn"}, b=1, n=64)
    sel = get_method("vispruner").select(signals, 8, **args)
    assert sel.indices.tolist() == get_method("fastervlm").select(signals, 8).indices.tolist()


def test_selection_accepts_int_like_budgets(make_signals):
    import numpy as np
    import torch

    signals: VisionSignals = make_signals((), b=1, n=16)
    assert get_method("uniform").select(signals, np.int64(4)).indices.shape == (1, 4)
    assert get_method("uniform").select(signals, torch.tensor(4)).indices.shape == (1, 4)
