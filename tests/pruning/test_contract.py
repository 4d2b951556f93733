"""The selector contract, checked for every registered pre-LLM method (new ones are picked up)."""

from __future__ import annotations

import pytest
import torch

from llava.pruning import VisionSignals, gather_tokens, get_method, list_methods

PRE_LLM = [name for name in list_methods() if get_method(name).stage == "pre_llm"]
N = 576


def run(name: str, signals: VisionSignals, k: int):
    return get_method(name).select(signals, k)


def check_indices(sel, b: int, n: int, k: int) -> None:
    """Exactly min(k, N) tokens; `indices` sorted unique in range, one per token that stands at a patch."""
    kk = min(k, n)
    idx = sel.indices
    assert idx.dtype == torch.long
    assert sel.num_tokens == kk
    extra = 0
    if sel.token_patch is None:
        assert idx.shape == (b, kk)
    else:
        assert sel.tokens is not None and sel.token_patch.dtype == torch.long
        assert sel.token_patch.shape == (b, kk)
        assert (sel.token_patch >= -1).all()
        at_none = sel.token_patch < 0
        extra = int(at_none[0].sum())
        assert (at_none.sum(dim=1) == extra).all()
        # The tokens standing at patches are exactly the kept patches.
        assert torch.equal(sel.token_patch[~at_none].view(b, kk - extra).sort(dim=-1).values, idx)
    assert idx.shape == (b, kk - extra)
    assert (idx >= 0).all() and (idx < n).all()
    if idx.shape[1] > 1:
        assert (idx[:, 1:] > idx[:, :-1]).all(), "indices must be sorted ascending and unique"


def check_tokens(sel, signals: VisionSignals, kk: int) -> None:
    if sel.tokens is not None:
        b, _, d = signals.features.shape
        assert sel.tokens.shape == (b, kk, d)
        assert sel.tokens.dtype == signals.features.dtype
        assert sel.tokens.device == signals.features.device


def test_builtin_methods_are_registered():
    for name in ["fastervlm", "vtc_cls", "vispruner", "visionzip", "divprune", "random", "uniform"]:
        assert name in PRE_LLM


@pytest.mark.parametrize("name", PRE_LLM)
@pytest.mark.parametrize("k", [1, 2, 7, 64, 192, 575])
def test_exact_count_sorted_unique_in_range(name, k, make_signals):
    method = get_method(name)
    signals = make_signals(method.needs, b=3, n=N)
    sel = run(name, signals, k)
    check_indices(sel, 3, N, k)
    check_tokens(sel, signals, k)


@pytest.mark.parametrize("name", PRE_LLM)
@pytest.mark.parametrize("k", [1, 64])
def test_deterministic(name, k, make_signals):
    method = get_method(name)
    first = run(name, make_signals(method.needs, seed=1), k)
    second = run(name, make_signals(method.needs, seed=1), k)
    assert torch.equal(first.indices, second.indices)
    assert (first.tokens is None) == (second.tokens is None)
    if first.tokens is not None:
        assert torch.equal(first.tokens, second.tokens)


@pytest.mark.parametrize("name", PRE_LLM)
@pytest.mark.parametrize("k", [N, N + 1, 10 * N])
def test_identity_when_budget_covers_all(name, k, make_signals):
    signals = make_signals(get_method(name).needs, b=2, n=N)
    sel = run(name, signals, k)
    assert torch.equal(sel.indices, torch.arange(N).expand(2, N))
    assert sel.tokens is None or torch.equal(sel.tokens, signals.features)
    assert sel.token_patch is None


@pytest.mark.parametrize("name", PRE_LLM)
@pytest.mark.parametrize("k", [1, 5, 64, 300])
def test_batch_equals_one_by_one(name, k, make_signals):
    signals = make_signals(get_method(name).needs, b=4, n=N, seed=2)
    batch = run(name, signals, k)
    for i in range(4):
        single = run(name, signals.index(slice(i, i + 1)), k)
        assert torch.equal(batch.indices[i : i + 1], single.indices), f"row {i}"
        assert (batch.tokens is None) == (single.tokens is None)
        assert (batch.token_patch is None) == (single.token_patch is None)
        if batch.token_patch is not None:
            assert torch.equal(batch.token_patch[i : i + 1], single.token_patch), f"row {i}"
        if batch.tokens is not None:
            torch.testing.assert_close(batch.tokens[i : i + 1], single.tokens, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", PRE_LLM)
def test_k1_and_small_non_square_n(name, make_signals):
    signals = make_signals(get_method(name).needs, b=2, n=50, d=4)
    for k in (1, 3, 49, 50):
        sel = run(name, signals, k)
        check_indices(sel, 2, 50, k)
        check_tokens(sel, signals, min(k, 50))


@pytest.mark.parametrize("name", PRE_LLM)
def test_low_precision_inputs(name, make_signals):
    signals = make_signals(get_method(name).needs, b=2, n=N, dtype=torch.bfloat16)
    sel = run(name, signals, 64)
    check_indices(sel, 2, N, 64)
    check_tokens(sel, signals, 64)


@pytest.mark.parametrize("name", PRE_LLM)
def test_plain_selection_tokens_are_gathered_features(name, make_signals):
    """Non-merging methods leave tokens None; the kept features are then the gathered ones."""
    signals = make_signals(get_method(name).needs, b=2, n=N)
    sel = run(name, signals, 32)
    kept = sel.tokens if sel.tokens is not None else gather_tokens(signals.features, sel.indices)
    assert kept.shape == (2, 32, signals.features.shape[-1])


@pytest.mark.parametrize("name", PRE_LLM)
@pytest.mark.parametrize("bad_k", [0, -3, 2.5, True])
def test_bad_budget_is_rejected(name, bad_k, make_signals):
    with pytest.raises(ValueError, match="budget k"):
        run(name, make_signals(get_method(name).needs, b=1, n=16), bad_k)


@pytest.mark.parametrize("name", [n for n in PRE_LLM if get_method(n).needs])
def test_missing_signal_is_reported(name, make_signals):
    signals = make_signals((), b=1, n=16)
    with pytest.raises(ValueError, match="needs the signal"):
        run(name, signals, 4)
