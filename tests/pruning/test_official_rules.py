"""VisionZip and DivPrune against loop re-derivations of their official code's rules.

Each reference below is written step by step from the official algorithm (dvlab-research/VisionZip,
visionzip/clip_encoder.py; vbdi/divprune, LLaVA/llava/model/llava_arch.py `DivPrune`), in plain
Python loops over the official inputs: the selected layer's hidden states with [CLS] at row 0, the
[CLS] attention row summed over heads, the head-mean keys of every token, and for DivPrune the
projected LLM-input embeddings. They share no code with the methods.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import CLIPVisionModel

from llava.mm_utils import process_images
from llava.pruning import PruningConfig, get_method
from llava.pruning.methods.visionzip import split_budget


def official_visionzip(hidden: torch.Tensor, attn: torch.Tensor, metric: torch.Tensor, dominant: int,
                       contextual: int) -> tuple[list[int], torch.Tensor]:
    """One image. hidden [1 + N, D] ([CLS] first), attn [N], metric [1 + N, Dh]; `dominant` counts [CLS].

    Returns (the sequence position each output token stands at, 0 = [CLS]; the tokens [K, D]).
    """
    n_seq = hidden.shape[0]
    scores = attn.tolist()
    top = sorted(range(n_seq - 1), key=lambda i: (-scores[i], i))[: dominant - 1]
    kept = {0} | {i + 1 for i in top}
    dominant_pos = [t for t in range(n_seq) if t in kept]  # sequence order: [CLS], then raster
    filtered = [t for t in range(n_seq) if t not in kept]
    step = max(1, len(filtered) // contextual)
    targets = list(range(0, len(filtered), step))[:contextual]
    unit = [metric[t] / metric[t].norm() for t in filtered]
    joined: dict[int, list[int]] = {j: [] for j in targets}
    for i in range(len(filtered)):
        if i in joined:
            continue
        sims = [float(unit[i] @ unit[j]) for j in targets]
        joined[targets[sims.index(max(sims))]].append(i)  # the first most similar target
    tokens = [hidden[t] for t in dominant_pos]
    for j in targets:
        members = joined[j]
        mean = sum(hidden[filtered[i]] for i in members) / len(members) if members else 0.0
        tokens.append(hidden[filtered[j]] + mean)
    return dominant_pos + [filtered[j] for j in targets], torch.stack(tokens)


def official_divprune(embeds: torch.Tensor, k: int) -> list[int]:
    """One image: embeds [N, H] (projected) -> the K picks, sorted as the official keep indices are."""
    norm = embeds / embeds.norm(dim=1, keepdim=True)
    dist = (1.0 - norm @ norm.t()).tolist()  # dist[i][j]
    n = len(dist)
    picks: list[int] = []
    for step in range(k):
        if step == 0:
            scores = [sorted(dist[i][j] for i in range(n))[1] for j in range(n)]  # second smallest of column j
        else:
            scores = [min(dist[p][j] for p in picks) for j in range(n)]
        picks.append(scores.index(max(scores)))  # argmax: the first maximum
    return sorted(picks)


def check_visionzip(sel, row: int, positions: list[int], tokens: torch.Tensor) -> None:
    """Our selection's row against the reference: same tokens, same order, same patches."""
    # rtol 1e-6: a contextual token sums up to a few hundred features, in another order than the loop's.
    torch.testing.assert_close(sel.tokens[row], tokens, atol=1e-6, rtol=1e-6)
    assert sel.token_patch[row].tolist() == [p - 1 for p in positions]  # sequence -> patch index, [CLS] -> -1
    assert sel.indices[row].tolist() == sorted(p - 1 for p in positions if p > 0)


# --- random signals --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 17, 64, 192])
def test_visionzip_default_is_the_official_rule(make_signals, k):
    signals = make_signals(get_method("visionzip").needs, b=2, n=144 if k < 144 else 576, d=6, seed=3)
    sel = get_method("visionzip").select(signals, k)
    dominant, contextual = split_budget(k)
    cls_key = torch.randn(2, signals.keys.shape[-1], generator=torch.Generator().manual_seed(9))
    for row in range(2):
        hidden = torch.cat([signals.cls_feature[row, None], signals.features[row]])  # [1 + N, D]
        metric = torch.cat([cls_key[row, None], signals.keys[row]])  # [1 + N, Dh]
        positions, tokens = official_visionzip(hidden, signals.cls_attn[row], metric, dominant, contextual)
        check_visionzip(sel, row, positions, tokens)


@pytest.mark.parametrize("k", [1, 9, 64])
def test_divprune_default_is_the_official_rule(make_signals, k):
    signals = make_signals(get_method("divprune").needs, b=2, n=100, d=6, seed=5)
    sel = get_method("divprune").select(signals, k)
    for row in range(2):
        assert sel.indices[row].tolist() == official_divprune(signals.projected[row], k)
    assert sel.tokens is None


def test_divprune_measures_the_projected_embeddings(make_signals):
    """The kept set follows `projected`, not the features: swapping them changes it (random data)."""
    signals = make_signals(get_method("divprune").needs, b=1, n=100, d=6, seed=5)
    default = get_method("divprune").select(signals, 20).indices
    on_features = get_method("divprune").select(signals, 20, space="features").indices
    assert default[0].tolist() == official_divprune(signals.projected[0], 20)
    assert on_features[0].tolist() == official_divprune(signals.features[0], 20)
    assert not torch.equal(default, on_features)


# --- the tiny model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def official_inputs(tiny, sample_images):
    """What the official LLaVA paths read: hidden states of layer -2, eager [CLS] rows, head-mean keys."""
    model, processor = tiny[1], tiny[2]
    tower = model.get_vision_tower()
    pixels = process_images(sample_images[:2], processor, model.config)
    layer = tower.num_run_layers - 1
    keys = []
    attn_mod = tower.vision_tower.encoder.layers[layer].self_attn
    handle = attn_mod.k_proj.register_forward_hook(lambda m, i, o: keys.append(o))
    try:
        with torch.no_grad():
            hidden = tower.vision_tower(pixels, output_hidden_states=True).hidden_states[-2]  # [B, 1 + N, D]
    finally:
        handle.remove()
    b, t, _ = keys[0].shape
    metric = keys[0].view(b, t, attn_mod.num_heads, -1).mean(dim=2)  # [B, 1 + N, Dh]
    eager = CLIPVisionModel._from_config(copy.deepcopy(tower.config), attn_implementation="eager").eval()
    eager.load_state_dict(tower.vision_tower.state_dict())
    with torch.no_grad():
        attn = eager(pixels, output_attentions=True).attentions[-2][:, :, 0, 1:].sum(dim=1)  # [B, N]
    return model, pixels, hidden, attn, metric


@pytest.mark.parametrize("k", [29, 64])
def test_visionzip_on_the_tiny_model_equals_the_official_rule(official_inputs, k):
    model, pixels, hidden, attn, metric = official_inputs
    method = get_method("visionzip")
    signals = model.vision_signals(pixels, needs=method.needs)
    torch.testing.assert_close(signals.cls_feature, hidden[:, 0], atol=0, rtol=0)
    sel = method.select(signals, k)
    dominant, contextual = split_budget(k)
    refs = [official_visionzip(hidden[r], attn[r], metric[r], dominant, contextual) for r in range(2)]
    for row, (positions, tokens) in enumerate(refs):
        check_visionzip(sel, row, positions, tokens)
    # The model projects exactly these K tokens, in this order.
    encoded = model.encode_images(pixels, k, pruning=PruningConfig("visionzip"))
    for row, (positions, _) in enumerate(refs):
        with torch.no_grad():
            expected = model.mm_projector(sel.tokens[row])  # the tokens checked against the reference above
        torch.testing.assert_close(encoded.features[row], expected, atol=1e-6, rtol=0)
        assert encoded.kept_indices[row].tolist() == sorted(p - 1 for p in positions if p > 0)


@pytest.mark.parametrize("k", [29, 64])
def test_divprune_on_the_tiny_model_equals_the_official_rule(official_inputs, k):
    model, pixels, hidden, _, _ = official_inputs
    with torch.no_grad():
        embeds = model.mm_projector(hidden[:, 1:])  # the LLM-input embeddings of all 576 patches
    encoded = model.encode_images(pixels, k, pruning=PruningConfig("divprune"))
    for row in range(2):
        kept = official_divprune(embeds[row], k)
        assert encoded.kept_indices[row].tolist() == kept
        torch.testing.assert_close(encoded.features[row], embeds[row, kept], atol=1e-6, rtol=0)
