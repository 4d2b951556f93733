"""Shared builders for the pruning tests: random VisionSignals holding what a method asks for."""

from __future__ import annotations

from typing import Callable, Iterable

import pytest
import torch

from llava.pruning import VisionSignals
from llava.pruning.base import (
    SIGNAL_CLS_ATTN, SIGNAL_CLS_ATTN_LAYERS, SIGNAL_CLS_FEATURE, SIGNAL_KEYS, SIGNAL_PROJECTED, SIGNAL_TEXT_RELEVANCE,
)

NUM_LAYERS = 23  # CLIP ViT-L/14 rows 0..22: LLaVA's penultimate-layer features
KEY_DIM = 8
PROJECTED_DIM = 24  # the LLM's hidden size for the `projected` signal


def cls_rows(gen: torch.Generator, *lead: int, n: int) -> torch.Tensor:
    """[CLS]->patch attention rows: a softmax over [CLS] + N patches, with the [CLS] column dropped."""
    logits = 3.0 * torch.randn(*lead, n + 1, generator=gen)
    return logits.softmax(dim=-1)[..., 1:]  # [..., N]


def build_signals(
    needs: Iterable[str],
    b: int = 3,
    n: int = 576,
    d: int = 16,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> VisionSignals:
    """Random signals for B images of N patches; only the signals named in `needs` are filled."""
    gen = torch.Generator().manual_seed(seed)
    needs = set(needs)
    features = torch.randn(b, n, d, generator=gen)
    cls_attn = cls_rows(gen, b, n=n) if SIGNAL_CLS_ATTN in needs else None
    layers = cls_rows(gen, b, NUM_LAYERS, n=n) if SIGNAL_CLS_ATTN_LAYERS in needs else None
    keys = torch.randn(b, n, KEY_DIM, generator=gen) if SIGNAL_KEYS in needs else None
    cls = torch.randn(b, d, generator=gen) if SIGNAL_CLS_FEATURE in needs else None
    # A fixed random two-layer map stands in for the projector: the LLM-input embeddings.
    projected = None
    if SIGNAL_PROJECTED in needs:
        w1, w2 = torch.randn(d, PROJECTED_DIM, generator=gen), torch.randn(PROJECTED_DIM, PROJECTED_DIM, generator=gen)
        projected = torch.nn.functional.gelu(features @ w1) @ w2
    # Patch-question cosine similarities (CDPruner), in CLIP's usual small range.
    relevance = 0.2 * torch.tanh(torch.randn(b, n, generator=gen)) if SIGNAL_TEXT_RELEVANCE in needs else None
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return VisionSignals(cast(features), cls_attn=cast(cls_attn), cls_attn_layers=cast(layers), keys=cast(keys),
                         cls_feature=cast(cls), projected=cast(projected), text_relevance=cast(relevance))


@pytest.fixture
def make_signals() -> Callable[..., VisionSignals]:
    """The `build_signals` builder, as a fixture."""
    return build_signals


@pytest.fixture(scope="session")
def eager(tiny_path):
    """The tiny model loaded with eager attention (its weights are the session tiny model's)."""
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(tiny_path, device="cpu", attn_implementation="eager")[1]
