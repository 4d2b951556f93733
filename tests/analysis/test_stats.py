"""The dispersion statistics on distributions whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from llava.analysis.stats import (
    cumulative_share,
    dispersion_summary,
    log_bin_edges,
    log_histogram,
    max_normalized,
    normalized_entropy,
    token_share_for_mass,
)

N = 576


def test_uniform():
    s = np.full(N, 3.0)  # unnormalised on purpose
    out = dispersion_summary(s)
    assert out["share_50"] == 288 / N and out["share_90"] == math.ceil(0.9 * N) / N
    assert out["entropy"] == pytest.approx(1.0, abs=1e-12)
    assert out["top1"] == pytest.approx(1 / N)
    np.testing.assert_allclose(cumulative_share(s), np.arange(1, N + 1) / N, atol=1e-12)
    np.testing.assert_allclose(max_normalized(s), 1.0)


def test_one_hot():
    s = np.zeros(N)
    s[17] = 0.25
    out = dispersion_summary(s)
    assert out["share_50"] == out["share_90"] == 1 / N
    assert out["entropy"] == 0.0
    assert out["top1"] == 1.0
    assert cumulative_share(s)[0] == 1.0
    counts, below = log_histogram(max_normalized(s), log_bin_edges(-6))
    assert below == N - 1 and counts.sum() == 1 and counts[-1] == 1  # the maximum (exactly 1) lands in the last bin


def test_two_level():
    """10 tokens hold 90% (0.09 each), 90 tokens hold 10%."""
    s = np.concatenate([np.full(90, 0.1 / 90), np.full(10, 0.09)])
    np.random.default_rng(0).shuffle(s)
    out = dispersion_summary(s)
    assert out["share_50"] == 6 / 100  # 6 x 0.09 = 0.54 >= 0.5 > 5 x 0.09
    assert out["share_90"] == 10 / 100  # exactly 0.9 after 10 tokens
    expected_h = -(0.9 * math.log(0.09) + 0.1 * math.log(0.1 / 90)) / math.log(100)
    assert out["entropy"] == pytest.approx(expected_h, abs=1e-12)
    assert out["top1"] == pytest.approx(0.09)
    assert token_share_for_mass(s, 0.95) == pytest.approx((10 + 45) / 100)  # 0.05 more needs 45 small tokens
    normed = max_normalized(s)
    assert sorted(set(np.round(normed, 12))) == [round(0.1 / 90 / 0.09, 12), 1.0]


def test_histogram_bins_and_labels():
    edges = log_bin_edges(-3, bins_per_decade=1)
    np.testing.assert_allclose(edges, [1e-3, 1e-2, 1e-1, 1])
    counts, below = log_histogram([1e-4, 2e-3, 0.05, 0.5, 1.0], edges)
    assert below == 1 and counts.tolist() == [1, 1, 2]


def test_invalid_scores_are_rejected():
    with pytest.raises(ValueError, match="sum to zero"):
        dispersion_summary(np.zeros(4))
    with pytest.raises(ValueError, match="non-negative"):
        normalized_entropy([0.5, -0.1])
    with pytest.raises(ValueError, match="mass"):
        token_share_for_mass([1, 1], 0)


def test_concentration_measures_in_closed_form():
    from llava.analysis.stats import concentration_summary, effective_share, gini, spearman, top_mass, top_overlap

    uniform = np.full(N, 2.0)
    out = concentration_summary(uniform)
    assert out["effective_share"] == pytest.approx(1.0) and out["gini"] == pytest.approx(0.0, abs=1e-12)
    assert out["top_mass"] == pytest.approx(math.ceil(0.1 * N) / N)
    one_hot = np.zeros(N)
    one_hot[7] = 5.0
    assert effective_share(one_hot) == pytest.approx(1 / N) and gini(one_hot) == pytest.approx((N - 1) / N)
    assert top_mass(one_hot, 0.01) == pytest.approx(1.0)
    # two levels: m tokens share mass 0.5 equally, the other N - m the other 0.5
    m = 64
    two = np.concatenate([np.full(m, 0.5 / m), np.full(N - m, 0.5 / (N - m))])
    h = -(0.5 * math.log(0.5 / m) + 0.5 * math.log(0.5 / (N - m)))
    assert effective_share(two) == pytest.approx(math.exp(h) / N)
    # Gini of two levels: 0.5 - m / N  (Lorenz curve with one kink at (1 - m/N, 0.5))
    assert gini(two) == pytest.approx(0.5 - m / N)
    assert top_mass(two, m / N) == pytest.approx(0.5)
    ramp = np.arange(N, dtype=float)
    assert top_overlap(ramp, ramp[::-1].copy(), 0.25) == 0.0 and top_overlap(ramp, 2 * ramp + 1, 0.25) == 1.0
    assert spearman(ramp, ramp ** 2) == pytest.approx(1.0) and spearman(ramp, -ramp) == pytest.approx(-1.0)
