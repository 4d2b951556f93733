"""Behaviour of each built-in method on small constructed inputs."""

from __future__ import annotations

import torch

from llava.pruning import VisionSignals, get_method, topk_raster
from llava.pruning.methods.uniform import uniform_indices
from llava.pruning.methods.visionzip import split_budget


def orthonormal(count: int, d: int, seed: int = 0) -> torch.Tensor:
    """`count` orthonormal directions in R^d, as rows. -> [count, d]."""
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, count, generator=gen))[0].T.contiguous()


# --- fastervlm -------------------------------------------------------------------------------------


def test_fastervlm_is_topk_then_sort(make_signals):
    signals = make_signals({"cls_attn"}, b=3, n=576, seed=5)
    sel = get_method("fastervlm").select(signals, 64)
    expected = torch.topk(signals.cls_attn, 64, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(sel.indices, expected)
    assert sel.tokens is None


def test_topk_raster_ties_go_to_lower_index():
    scores = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    assert topk_raster(scores, 2).tolist() == [[1, 2]]


# --- vtc_cls ---------------------------------------------------------------------------------------


def test_vtc_cls_sums_layers_from_start(make_signals):
    signals = make_signals({"cls_attn_layers"}, b=2, n=576, seed=3)
    layers = signals.cls_attn_layers  # [B, 23, N]
    method = get_method("vtc_cls")
    assert method.defaults == {"start_layer": 16}
    default = method.select(signals, 64).indices
    assert torch.equal(default, topk_raster(layers[:, 16:].sum(dim=1), 64))
    assert torch.equal(method.select(signals, 64, start_layer=0).indices, topk_raster(layers.sum(dim=1), 64))
    # -1 (and any start past the selected layer) is the selected layer alone, i.e. FasterVLM's rule.
    last_only = topk_raster(layers[:, -1], 64)
    assert torch.equal(method.select(signals, 64, start_layer=-1).indices, last_only)
    assert torch.equal(method.select(signals, 64, start_layer=99).indices, last_only)
    assert not torch.equal(default, last_only)


# --- vispruner -------------------------------------------------------------------------------------


def test_vispruner_diverse_part_drops_near_duplicates():
    """One thinning round: A tokens with a near-copy in B go; unique A tokens stay.

    K = 20 with ratio 0.5: 10 important + 10 diverse out of a residual of 14 (7 A, 7 B), so
    r = 4 A tokens are dropped: exactly the 4 that duplicate B tokens.
    """
    d, n_imp = 64, 10
    dirs = orthonormal(n_imp + 7 + 3, d)
    important = dirs[:n_imp]
    b_tokens = dirs[n_imp : n_imp + 7]
    unique_a = dirs[n_imp + 7 :]
    dup_a = b_tokens[[0, 2, 4, 6]] + 1e-3 * orthonormal(4, d, seed=1)  # near-copies of B tokens
    # Residual in descending attention: A at even positions, B at odd ones.
    a_tokens = torch.cat([dup_a[:2], unique_a[:1], dup_a[2:], unique_a[1:]])  # dup, dup, u, dup, dup, u, u
    residual = torch.stack([a_tokens, b_tokens], dim=1).reshape(14, d)
    feats = torch.cat([important, residual])[None]  # [1, 24, d]
    attn = torch.linspace(1.0, 0.1, 24)[None].softmax(dim=-1)  # position order == attention order
    sel = get_method("vispruner").select(VisionSignals(feats, cls_attn=attn), 20).indices[0].tolist()

    dup_positions = {n_imp + 2 * i for i in (0, 1, 3, 4)}  # the near-copies among A
    assert set(range(n_imp)) <= set(sel), "important tokens are always kept"
    assert not dup_positions & set(sel)
    assert len(sel) == 20
    unit = torch.nn.functional.normalize(feats[0, sel], dim=-1)
    sim = unit @ unit.T - 2 * torch.eye(20)
    assert sim.max() < 0.5, "no near-duplicate pair survives"


def test_vispruner_keeps_top_attention_and_ratio_extremes(make_signals):
    signals = make_signals({"cls_attn"}, b=2, n=576, seed=4)
    method = get_method("vispruner")
    assert method.defaults["important_ratio"] == 0.5
    sel = method.select(signals, 64).indices
    top32 = torch.topk(signals.cls_attn, 32, dim=-1).indices
    for row in range(2):
        assert set(top32[row].tolist()) <= set(sel[row].tolist())
    # ratio 1: attention only, i.e. FasterVLM.
    assert torch.equal(
        method.select(signals, 64, important_ratio=1.0).indices, get_method("fastervlm").select(signals, 64).indices
    )


def test_vispruner_diverse_tokens_cover_more_clusters_than_attention():
    """Duplicate clusters with the highest attention: diverse filling reaches other clusters."""
    d, n_clusters, per = 32, 16, 4
    dirs = orthonormal(n_clusters, d)
    label = torch.arange(n_clusters).repeat_interleave(per)  # [64], clusters contiguous
    gen = torch.Generator().manual_seed(0)
    feats = (dirs[label] + 1e-3 * torch.randn(64, d, generator=gen))[None]
    attn = torch.linspace(2.0, 0.0, 64)[None].softmax(dim=-1)  # clusters 0..3 hold the top 16
    vis = get_method("vispruner").select(VisionSignals(feats, cls_attn=attn), 16).indices[0]
    fast = get_method("fastervlm").select(VisionSignals(feats, cls_attn=attn), 16).indices[0]
    assert len(set(label[fast].tolist())) == 4
    assert len(set(label[vis].tolist())) >= 8


# --- visionzip -------------------------------------------------------------------------------------
# The official rule is checked against a loop re-derivation in test_official_rules.py; here: the budget
# split, a hand example of the default, and the named variants.

OLD_VARIANT = {"cls_token": False, "contextual_merge": "mean_all", "order": "raster"}


def test_visionzip_budget_split():
    assert split_budget(64) == (54, 10)
    assert split_budget(128) == (108, 20)
    assert split_budget(192) == (162, 30)
    assert split_budget(1) == (1, 0)
    assert split_budget(2) == (1, 1)
    assert split_budget(64, contextual=4) == (60, 4)


def hand_signals() -> VisionSignals:
    """3 x 3 patches with features [i, i^2], a [CLS] feature [100, 200]; patch 4 then 7 lead the attention."""
    feats = torch.tensor([[float(i), float(i * i)] for i in range(9)])[None]  # [1, 9, 2]
    attn = torch.full((1, 9), 0.05)
    attn[0, 4], attn[0, 7] = 0.4, 0.3
    keys = torch.tensor(
        [[1.0, 0.0], [1.0, 0.1], [0.9, 0.2], [0.0, 1.0], [5.0, 5.0], [0.1, 1.0], [0.2, 0.8], [-3.0, 3.0], [0.0, 1.0]]
    )[None]
    return VisionSignals(feats, cls_attn=attn, keys=keys, cls_feature=torch.tensor([[100.0, 200.0]]))


def test_visionzip_official_tokens_by_hand():
    """K = 4, 2 contextual: [CLS] + patch 4 dominant; R = 8 others, centres 0 and 5 (stride 8 // 2 = 4)."""
    sel = get_method("visionzip").select(hand_signals(), 4, contextual=2)
    assert sel.indices.tolist() == [[0, 4, 5]]  # [CLS] is no patch
    assert sel.token_patch.tolist() == [[-1, 4, 0, 5]]
    expected = torch.tensor(
        [
            [100.0, 200.0],  # [CLS] first
            [4.0, 16.0],  # the dominant patch
            [0 + (1 + 2) / 2, 0 + (1 + 4) / 2],  # centre 0 plus the mean of patches 1, 2
            [5 + (3 + 6 + 7 + 8) / 4, 25 + (9 + 36 + 49 + 64) / 4],  # centre 5 plus the mean of 3, 6, 7, 8
        ]
    )[None]
    torch.testing.assert_close(sel.tokens, expected)
    extra, at_patches = sel.tokens_in_patch_order()
    torch.testing.assert_close(extra, expected[:, :1])
    torch.testing.assert_close(at_patches, expected[:, [2, 1, 3]])  # patches 0, 4, 5


def test_visionzip_variants_by_hand():
    """The earlier variant: no [CLS] slot, plain means, raster order (dominants 4 and 7, centres 0 and 3)."""
    sel = get_method("visionzip").select(hand_signals(), 4, contextual=2, **OLD_VARIANT)
    assert sel.indices.tolist() == [[0, 3, 4, 7]] and sel.token_patch.tolist() == [[0, 3, 4, 7]]
    expected = torch.tensor(
        [
            [(0 + 1 + 2) / 3, (0 + 1 + 4) / 3],  # centre 0 with patches 1, 2
            [(3 + 5 + 6 + 8) / 4, (9 + 25 + 36 + 64) / 4],  # centre 3 with patches 5, 6, 8
            [4.0, 16.0],  # dominant patches keep their features
            [7.0, 49.0],
        ]
    )[None]
    torch.testing.assert_close(sel.tokens, expected)
    # Each option alone: the official order puts the contextual tokens last; mean_all divides by 1 + n.
    sel = get_method("visionzip").select(hand_signals(), 4, contextual=2, cls_token=False, contextual_merge="mean_all")
    assert sel.token_patch.tolist() == [[4, 7, 0, 3]]
    torch.testing.assert_close(sel.tokens, expected[:, [2, 3, 0, 1]])
    sel = get_method("visionzip").select(hand_signals(), 4, contextual=2, order="raster")
    assert sel.token_patch.tolist() == [[-1, 0, 4, 5]]


def test_visionzip_rejects_unknown_variants():
    for key, value in (("contextual_merge", "sum"), ("order", "random")):
        try:
            get_method("visionzip").select(hand_signals(), 4, **{key: value})
        except ValueError as err:
            assert str(err).startswith(f"pruning method 'visionzip': {key}={value!r} must be one of")
        else:
            raise AssertionError(f"{key}={value} was accepted")


def reference_old_visionzip(feats, attn, keys, k):
    """A loop version of the earlier variant, one image: feats [N, D], attn [N], keys [N, Dh]."""
    n = feats.shape[0]
    n_dom, n_ctx = split_budget(k)
    dominant = sorted(torch.topk(attn, n_dom).indices.tolist())
    rest = [i for i in range(n) if i not in dominant]
    stride = max(1, len(rest) // n_ctx)
    centres = rest[::stride][:n_ctx]
    groups = {c: [c] for c in centres}
    unit = torch.nn.functional.normalize(keys, dim=-1)
    for i in rest:
        if i in groups:
            continue
        best = max(centres, key=lambda c: (float(unit[i] @ unit[c]), -c))
        groups[best].append(i)
    out = {i: feats[i] for i in dominant}
    out.update({c: feats[members].mean(dim=0) for c, members in groups.items()})
    order = sorted(out)
    return order, torch.stack([out[i] for i in order])


def test_visionzip_old_variant_matches_loop_reference(make_signals):
    signals = make_signals(get_method("visionzip").needs, b=2, n=144, d=6, seed=7)
    sel = get_method("visionzip").select(signals, 32, **OLD_VARIANT)
    for row in range(2):
        idx, toks = reference_old_visionzip(signals.features[row], signals.cls_attn[row], signals.keys[row], 32)
        assert sel.indices[row].tolist() == idx
        torch.testing.assert_close(sel.tokens[row], toks)


# --- divprune --------------------------------------------------------------------------------------


def test_divprune_hand_example():
    """Three near-copies of e1, two of e2, one lone e3 (index 4): K = 3 takes one of each, e3 first."""
    emb = torch.tensor(
        [
            [1.0, 0.01, 0.0],
            [1.0, 0.0, 0.02],
            [0.01, 1.0, 0.0],
            [1.0, 0.02, 0.01],
            [0.0, 0.0, 1.0],
            [0.0, 1.0, 0.01],
        ]
    )[None]
    feats = torch.randn(1, 6, 2, generator=torch.Generator().manual_seed(0))  # not what DivPrune measures
    sel = get_method("divprune").select(VisionSignals(feats, projected=emb), 3).indices[0].tolist()
    assert 4 in sel
    assert len({0, 1, 3} & set(sel)) == 1 and len({2, 5} & set(sel)) == 1
    assert sel == sorted(sel)
    # space=features measures the pre-projector features instead.
    same = get_method("divprune").select(VisionSignals(emb, projected=feats), 3, space="features").indices
    assert same[0].tolist() == sel


def reference_max_min(feats: torch.Tensor, k: int) -> list[int]:
    """Brute-force greedy max-min on cosine distance, one image feats [N, D], in pick order."""
    unit = torch.nn.functional.normalize(feats, dim=-1)
    dist = 1 - unit @ unit.T
    n = feats.shape[0]
    nearest = [min(float(dist[i, j]) for j in range(n) if j != i) for i in range(n)]
    picks = [max(range(n), key=lambda i: (nearest[i], -i))]
    while len(picks) < k:
        left = [i for i in range(n) if i not in picks]
        picks.append(max(left, key=lambda i: (min(float(dist[i, p]) for p in picks), -i)))
    return picks


def test_divprune_features_variant_is_greedy_max_min(make_signals):
    signals = make_signals(get_method("divprune").needs, b=2, n=40, d=5, seed=11)
    sel = get_method("divprune").select(signals, 9, space="features").indices
    for row in range(2):
        assert sel[row].tolist() == sorted(reference_max_min(signals.features[row], 9))


def test_divprune_rejects_unknown_space(make_signals):
    signals = make_signals(get_method("divprune").needs, b=1, n=16)
    try:
        get_method("divprune").select(signals, 4, space="keys")
    except ValueError as err:
        assert str(err).startswith("pruning method 'divprune': space='keys' must be one of")
    else:
        raise AssertionError("space=keys was accepted")


# --- random and uniform ----------------------------------------------------------------------------


def test_random_is_seeded_and_row_independent(make_signals):
    signals = make_signals((), b=3, n=576)
    method = get_method("random")
    a = method.select(signals, 64).indices
    assert torch.equal(a, method.select(signals, 64, seed=0).indices)
    assert all(torch.equal(a[0], a[r]) for r in range(3))
    assert not torch.equal(a, method.select(signals, 64, seed=1).indices)


def test_uniform_square_grid_lattice():
    idx = uniform_indices(576, 64)
    rows, cols = idx // 24, idx % 24
    band_centres = [1, 4, 7, 10, 13, 16, 19, 22]
    assert sorted(set(rows.tolist())) == band_centres
    assert sorted(set(cols.tolist())) == band_centres
    assert all((rows == r).sum() == 8 for r in band_centres)


def test_uniform_spreads_for_awkward_budgets():
    for k in (1, 5, 10, 37, 100, 575):
        idx = uniform_indices(576, k)
        assert idx.numel() == k and torch.equal(idx, idx.unique())
    assert uniform_indices(576, 1).tolist() == [12 * 24 + 12]  # the centre patch
    rows, cols = uniform_indices(576, 10) // 24, uniform_indices(576, 10) % 24
    quadrants = {(int(r) // 12, int(c) // 12) for r, c in zip(rows, cols)}
    assert quadrants == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert uniform_indices(50, 5).tolist() == [5, 15, 25, 35, 45]  # non-square N: evenly spaced
