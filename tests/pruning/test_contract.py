"""The selector contract, checked for every registered method (new ones are picked up): pre-LLM ones
on random signals, in-LLM ones through the LLM loop of the tiny model."""

from __future__ import annotations

import pytest
import torch

from llava.pruning import VisionSignals, gather_tokens, get_method, list_methods

from in_llm_helpers import TINY_IDENTITY, TINY_RUN

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


# ---- in-LLM methods: the same contract, run through the LLM loop of the tiny model ----------------
IN_LLM = [name for name in list_methods() if get_method(name).stage == "in_llm"]
QUESTIONS = ("What shapes are there?", "Describe the picture in detail please.")


def test_builtin_in_llm_methods_are_registered():
    assert {"fastv", "pdrop", "dart", "sparsevlm"} <= set(IN_LLM)


@pytest.fixture(scope="module")
def llm_inputs(tiny, sample_images):
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.eval.runner import build_prompt
    from llava.mm_utils import process_images, tokenizer_image_token

    tokenizer, model, processor, _ = tiny
    rows = [tokenizer_image_token(build_prompt(q, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX) for q in QUESTIONS]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, process_images(sample_images[:2], processor, model.config)


def in_llm_config(name: str, table=TINY_RUN, k: int = 64):
    from llava.pruning import PruningConfig

    k, args = table.get(name, (k, {}))
    return PruningConfig(name, k, method_args=args)


def stage_counts(report: dict, image: int) -> list[tuple[int, int]]:
    """(layer, image tokens from that layer on) for one image, from a method's report."""
    layers = report.get("layers", [report["layer"]])
    counts = report["kept_per_stage"][image] if "kept_per_stage" in report else [report["kept_after_layer"][image]]
    return list(zip(layers, counts))


@pytest.mark.parametrize("name", IN_LLM)
def test_in_llm_exact_counts_per_layer(name, tiny, llm_inputs):
    from llava.model.llm_loop import LLMLoop

    model = tiny[1]
    ids, mask, pixels = llm_inputs
    cfg = in_llm_config(name)
    mm = model.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=cfg)
    dropper = model.in_llm_pruner(mm, cfg)
    loop = LLMLoop(model.get_model(), model.lm_head, dropper)
    loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
    report = dropper.report()
    n_layers = model.config.num_hidden_layers
    for b, ((start, end),) in enumerate(mm.image_spans):
        stages = stage_counts(report, b)
        counts = [c for _, c in stages]
        assert all(0 < c < N for c in counts) and counts == sorted(counts, reverse=True)
        kept = dropper.kept[b]
        recycled = report["recycled_per_stage"][b][-1] if "recycled_per_stage" in report else 0  # sparsevlm
        assert kept.dtype == torch.long and len(kept) + recycled == counts[-1]
        assert (kept >= 0).all() and (kept < N).all() and (kept[1:] > kept[:-1]).all()
        text = int(mask[b].sum()) - 1  # the row's text tokens (its <image> placeholder became the image)
        per_layer = [N + text] * n_layers
        for layer, c in stages:
            per_layer[layer:] = [c + text] * (n_layers - layer)
        expected_avg = sum(p - text for p in per_layer) / n_layers
        assert report["layer_averaged"][b] == pytest.approx(expected_avg)
    # every row's keys per layer: the longest row sets the padded width the cache holds
    width = [max(int(mask[b].sum()) - 1 + seen_at(stage_counts(report, b), i) for b in range(2))
             for i in range(n_layers)]
    assert loop.kv_lengths() == width


def seen_at(stages: list[tuple[int, int]], layer: int) -> int:
    """Image tokens a layer sees, from (layer, count) stages."""
    seen = N
    for first, count in stages:
        if layer >= first:
            seen = count
    return seen


@pytest.mark.parametrize("name", IN_LLM)
def test_in_llm_deterministic_and_batch_equals_singles(name, tiny, llm_inputs):
    model = tiny[1]
    ids, mask, pixels = llm_inputs
    cfg = in_llm_config(name)
    run = lambda i, m, p: model.generate(i, images=p, attention_mask=m, max_new_tokens=4, do_sample=False,  # noqa: E731
                                         pad_token_id=0, pruning=cfg)
    first = run(ids, mask, pixels)
    kept = [k.tolist() for k in model.last_multimodal.kept_indices]
    second = run(ids, mask, pixels)
    assert torch.equal(first, second) and [k.tolist() for k in model.last_multimodal.kept_indices] == kept
    for b in range(2):
        single = run(ids[b][mask[b].bool()][None], None, pixels[b:b + 1])
        assert single[0].tolist() == first[b][:single.shape[1]].tolist(), f"row {b}"
        assert model.last_multimodal.kept_indices[0].tolist() == kept[b]


@pytest.mark.parametrize("name", IN_LLM)
@pytest.mark.parametrize("k", [N, N + 1])
def test_in_llm_no_pruning_when_budget_covers_all(name, k, tiny, llm_inputs):
    model = tiny[1]
    ids, mask, pixels = llm_inputs
    from llava.pruning import PruningConfig

    full = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0,
                          pruning=PruningConfig())
    cfg = in_llm_config(name, TINY_IDENTITY, k)
    ours = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0,
                          pruning=cfg)
    report = model.last_multimodal.in_llm
    assert report is not None
    assert all(c == N for b in range(2) for _, c in stage_counts(report, b))
    assert ours.tolist() == full.tolist()
