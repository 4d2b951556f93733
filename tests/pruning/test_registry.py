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
        get_method("uniform").select(make_signals((), b=1, n=16), 4, seed=1)


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


def test_static_method_names_equal_the_registry():
    """`--help` lists methods from a torch-free tuple; it must name exactly the registered ones."""
    from llava.cli_help import METHOD_NAMES

    assert list(METHOD_NAMES) == list_methods()


@pytest.mark.parametrize("method, text, message", [
    ("vispruner", "important_ratio=abc",
     "pruning method 'vispruner': argument important_ratio='abc' must be a float (default 0.5); fix --pruning-args"),
    ("vispruner", "step=2.5", "pruning method 'vispruner': argument step=2.5 must be an int (default 8); fix --pruning-args"),
    ("vispruner", "step=true", "pruning method 'vispruner': argument step=True must be an int (default 8); fix --pruning-args"),
    ("visionzip", "contextual_ratio=x",
     "pruning method 'visionzip': argument contextual_ratio='x' must be a float (default 0.15625); fix --pruning-args"),
    ("fastv", "ratio=half",
     "pruning method 'fastv': argument ratio='half' must be a float or None (default None); fix --pruning-args"),
    ("random", "seed=", "pruning method 'random': argument seed='' must be an int (default 0); fix --pruning-args"),
    ("uniform", "x=1", "pruning method 'uniform': unknown argument(s) ['x']; it takes no arguments"),
])
def test_method_args_are_checked_against_their_defaults(method, text, message):
    with pytest.raises(ValueError) as err:
        parse_method_args(text, method)
    assert str(err.value) == message


def test_checked_args_convert_ints_for_float_options(make_signals):
    parsed = parse_method_args("important_ratio=1,step=4", "vispruner")
    assert parsed == {"important_ratio": 1.0, "step": 4} and type(parsed["important_ratio"]) is float
    assert parse_method_args("ratio=0.5,layer=3", "fastv") == {"ratio": 0.5, "layer": 3}
    assert parse_method_args(None, "fastervlm") == {}
    method = get_method("vispruner")
    with pytest.raises(ValueError, match=r"argument important_ratio='0.5' must be a float"):
        method.select(make_signals(method.needs, b=1, n=16), 4, important_ratio="0.5")  # the one check, also in select


def test_check_args_accepts_numpy_scalars_as_python_numbers():
    import numpy as np

    checked = get_method("vispruner").check_args({"step": np.int64(4), "important_ratio": np.float32(0.25)})
    assert checked == {"step": 4, "important_ratio": 0.25}
    assert type(checked["step"]) is int and type(checked["important_ratio"]) is float
    with pytest.raises(ValueError, match=r"argument step=None must be an int \(default 8\)"):
        get_method("vispruner").check_args({"step": None})
