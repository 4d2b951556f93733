"""Small helpers shared by the built-in methods (not part of the public API)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..base import Selection


def identity_selection(features: torch.Tensor) -> Selection:
    """Keep every patch: indices 0..N-1 for each row, no new tokens. features [B, N, D]."""
    b, n = features.shape[:2]
    return Selection(indices=torch.arange(n, device=features.device).expand(b, n).clone())


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """L2-normalise the last dim in float32 (similarities are always computed in float32)."""
    return F.normalize(x.float(), dim=-1, eps=1e-12)


def check_signal(name: str, t: torch.Tensor | None, features: torch.Tensor, ndim: int, patch_dim: int) -> torch.Tensor:
    """Check that signal `name` is present, has `ndim` dims, B rows and N patches along `patch_dim`."""
    if t is None:
        raise ValueError(f"this method needs the {name!r} signal from the vision tower")
    b, n = features.shape[:2]
    if t.dim() != ndim or t.shape[0] != b or t.shape[patch_dim] != n:
        raise ValueError(
            f"signal {name!r} has shape {tuple(t.shape)}, which does not fit features {tuple(features.shape)}"
        )
    return t
