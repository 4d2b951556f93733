"""The vision-to-language projector (`mm_projector`), built from LLaVA's `mm_projector_type`."""

from __future__ import annotations

import re

from torch import nn


class IdentityMap(nn.Module):
    """Projector that passes features through unchanged ('identity')."""

    def forward(self, x):
        return x


def build_vision_projector(projector_type: str, mm_hidden_size: int, hidden_size: int) -> nn.Module:
    """'linear', 'mlp{N}x_gelu' (Linear, GELU, Linear, ... as nn.Sequential: weights '0', '2', ...) or 'identity'."""
    if projector_type == "linear":
        return nn.Linear(mm_hidden_size, hidden_size)
    if projector_type == "identity":
        return IdentityMap()
    match = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if match:
        layers: list[nn.Module] = [nn.Linear(mm_hidden_size, hidden_size)]
        for _ in range(1, int(match.group(1))):
            layers += [nn.GELU(), nn.Linear(hidden_size, hidden_size)]
        return nn.Sequential(*layers)
    raise ValueError(f"unknown mm_projector_type {projector_type!r}; expected linear, identity or mlp<N>x_gelu")
