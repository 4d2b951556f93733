"""Uniform baseline: K patches spread evenly over the patch grid, independent of the image.

For a square N = s * s grid the picks lie on a gh x gw lattice (gh = ceil(sqrt(K)),
gw = ceil(K / gh)) whose rows and columns sit at the centres of equal bands of the grid; when the
lattice has more than K points, K of them are taken evenly spaced in raster order. For N that is
not a perfect square the picks are K evenly spaced raster indices, floor((i + 0.5) * N / K).
"""

from __future__ import annotations

import math

import torch

from ..base import Selection, VisionSignals
from ..registry import register_method
from ._common import identity_selection


def _even(count: int, length: int) -> torch.Tensor:
    """`count` distinct positions in [0, length) at the centres of equal bands (count <= length)."""
    return ((torch.arange(count, dtype=torch.float64) + 0.5) * length / count).floor().long()


def uniform_indices(n: int, k: int) -> torch.Tensor:
    """K spatially even, sorted, distinct indices in [0, n) (k < n). -> [K]."""
    side = math.isqrt(n)
    if side * side != n:
        return _even(k, n)
    gh = math.isqrt(k - 1) + 1 if k > 1 else 1  # ceil(sqrt(k))
    gw = -(-k // gh)  # ceil(k / gh); gh, gw <= side since k < n
    lattice = (_even(gh, side)[:, None] * side + _even(gw, side)[None, :]).flatten()  # [gh * gw], raster order
    return lattice[_even(k, lattice.numel())]


@register_method("uniform")
def uniform(signals: VisionSignals, k: int) -> Selection:
    """K patches on an even grid over the sqrt(N) x sqrt(N) patch grid, in raster order."""
    feats = signals.features
    b, n = feats.shape[:2]
    if k >= n:
        return identity_selection(feats)
    return Selection(indices=uniform_indices(n, k).to(feats.device).expand(b, k).clone())  # [B, K]
