"""Pure statistics of one attention distribution over N tokens (NumPy, float64, no model code).

Every function takes non-negative scores [N] (not necessarily summing to one: they are normalised
to shares p = s / sum(s) first where a share is meant) and returns plain numbers or arrays.
"""

from __future__ import annotations

import numpy as np

# Cumulative shares are compared with a fraction up to this tolerance, so that e.g. a uniform
# distribution reaches 50% at exactly half of its tokens despite rounding in the cumulative sum.
_TOL = 1e-9


def shares(scores) -> np.ndarray:
    """p = s / sum(s) as float64 [N]; raises on negative, non-finite or all-zero scores."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("empty score vector")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("scores must be finite and non-negative")
    total = s.sum()
    if total <= 0:
        raise ValueError("scores sum to zero; there is no distribution to describe")
    return s / total


def cumulative_share(scores) -> np.ndarray:
    """c[k-1] = share of the total held by the k largest scores, k = 1..N (sorted descending) [N]."""
    return np.cumsum(np.sort(shares(scores))[::-1])


def token_share_for_mass(scores, mass: float) -> float:
    """Smallest fraction k/N of tokens (largest first) whose scores hold at least `mass` of the total."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    c = cumulative_share(scores)
    k = int(np.searchsorted(c, mass - _TOL, side="left")) + 1  # first index with c >= mass
    return min(k, c.size) / c.size


def normalized_entropy(scores) -> float:
    """Shannon entropy of the shares divided by log N: 1 for uniform, 0 for one-hot (N = 1 gives 0)."""
    p = shares(scores)
    if p.size == 1:
        return 0.0
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(p.size))


def max_normalized(scores) -> np.ndarray:
    """s / max(s) [N], in [0, 1]; the largest score becomes 1."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    top = s.max()
    if top <= 0:
        raise ValueError("scores are all zero; cannot normalise by the maximum")
    return s / top


def log_bin_edges(low_exponent: int = -6, bins_per_decade: int = 10) -> np.ndarray:
    """Log-spaced histogram edges from 10**low_exponent to 1 (fixed, so counts add across samples)."""
    n = -low_exponent * bins_per_decade
    return np.logspace(low_exponent, 0, n + 1)


def log_histogram(values, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Counts of `values` in [edges[i], edges[i+1]) (the last bin includes 1) and the count below edges[0]."""
    v = np.asarray(values, dtype=np.float64).ravel()
    below = int((v < edges[0]).sum())
    counts, _ = np.histogram(v[v >= edges[0]], bins=edges)
    return counts.astype(np.int64), below


def dispersion_summary(scores) -> dict[str, float]:
    """The dispersion numbers of one distribution.

    share_50 / share_90: fraction of tokens (largest first) holding 50% / 90% of the mass;
    entropy: normalized_entropy; top1: largest share.
    """
    p = shares(scores)
    return {
        "share_50": token_share_for_mass(p, 0.5),
        "share_90": token_share_for_mass(p, 0.9),
        "entropy": normalized_entropy(p),
        "top1": float(p.max()),
    }


def effective_share(scores) -> float:
    """exp(Shannon entropy) / N: the share of tokens a uniform distribution of the same entropy would use."""
    p = shares(scores)
    nz = p[p > 0]
    return float(np.exp(-(nz * np.log(nz)).sum()) / p.size)


def gini(scores) -> float:
    """Gini coefficient of the shares: 0 for uniform, (N - 1) / N for one-hot."""
    p = np.sort(shares(scores))  # ascending
    n = p.size
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * p).sum() / n)


def top_mass(scores, fraction: float) -> float:
    """Share of the total held by the ceil(fraction * N) largest scores."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    c = cumulative_share(scores)
    return float(c[max(1, int(np.ceil(fraction * c.size - _TOL))) - 1])


def top_overlap(a, b, fraction: float) -> float:
    """|top(a) & top(b)| / k for the k = ceil(fraction * N) largest entries of each (ties: the lower index)."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"score vectors differ in length: {a.size} vs {b.size}")
    k = max(1, int(np.ceil(fraction * a.size - _TOL)))
    top = lambda s: set(np.argsort(-s, kind="stable")[:k].tolist())  # noqa: E731
    return len(top(a) & top(b)) / k


def spearman(a, b) -> float:
    """Spearman rank correlation of two score vectors (ranks by stable sort; ties are not averaged)."""
    ra = np.argsort(np.argsort(np.asarray(a, dtype=np.float64).ravel(), kind="stable"), kind="stable")
    rb = np.argsort(np.argsort(np.asarray(b, dtype=np.float64).ravel(), kind="stable"), kind="stable")
    return float(np.corrcoef(ra, rb)[0, 1])


def concentration_summary(scores, top_fraction: float = 0.1) -> dict[str, float]:
    """`dispersion_summary` plus effective_share, gini and top_mass (the mass of the top `top_fraction`)."""
    out = dispersion_summary(scores)
    out.update(effective_share=effective_share(scores), gini=gini(scores), top_mass=top_mass(scores, top_fraction))
    return out
