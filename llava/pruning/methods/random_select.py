"""Random baseline: K patches drawn uniformly without replacement, reproducible from a seed.

Every row uses its own generator seeded with `seed`, so an image's choice does not depend on its
place in the batch (batch == one by one); for a given N, K and seed all images get the same subset.
The draw runs on the CPU, so the result is the same on every device.
"""

from __future__ import annotations

import torch

from ..base import Selection, VisionSignals
from ..registry import register_method
from ._common import identity_selection


def random_indices(n: int, k: int, seed: int) -> torch.Tensor:
    """K distinct indices in [0, n), sorted, drawn with a CPU generator seeded with `seed`. -> [K]."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randperm(n, generator=gen)[:k].sort().values


@register_method("random", defaults={"seed": 0})
def random_select(signals: VisionSignals, k: int, seed: int = 0) -> Selection:
    """K random patches (seeded per row), in raster order."""
    feats = signals.features
    b, n = feats.shape[:2]
    if k >= n:
        return identity_selection(feats)
    rows = [random_indices(n, k, seed) for _ in range(b)]  # one generator per row, same seed
    return Selection(indices=torch.stack(rows).to(feats.device))  # [B, K]
