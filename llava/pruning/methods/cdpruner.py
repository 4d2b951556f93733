"""CDPruner: keep the MAP subset of a conditional DPP over token similarity and question relevance.

Zhang et al., "Beyond Attention or Similarity: Maximizing Conditional Diversity for Token Pruning in
MLLMs" (arXiv 2506.10967, https://github.com/Theia-4869/CDPruner; rule in
`llava/model/llava_arch.py` `encode_images`, image and text embeddings in
`llava/model/multimodal_encoder/clip_encoder.py`).

Official rule (the default), per image of N tokens:
- similarity S = cosine similarity of the projected LLM-input embeddings (`projected`) [N, N];
- relevance: the `text_relevance` signal (mean over the question's text segments of the cosine
  between each patch's CLIP image embedding and the text embedding) is negated, as the official
  code does, and min-max rescaled: r = (-rel - min + 1e-6) / (max - min);
- kernel L = diag(r) S diag(r);
- greedy MAP inference with the incremental Cholesky update (Chen et al., NeurIPS 2018): start with
  d_i^2 = L_ii; pick j = argmax d^2; e = (L_j - sum_t c_t[j] c_t) / d_j; append e to the c's;
  d^2 -= e^2; d_j^2 = -inf; K times. The picks are returned in raster order (the official code sorts).

Options: `theta` (the official code's commented-out variant) rescales the relevance as
exp(alpha r) with alpha = theta / (2 (1 - theta)) before the kernel; theta = 0 gives the plain DPP
on similarity. Differences from the official code: relevance is min-max rescaled per image (the
official code takes min and max over its whole batch: the one image of LLaVA-1.5, the views of a
LLaVA-NeXT image); once an image's chosen gain d_j^2 is no longer positive (K beyond the kernel's
rank, where the official update would divide by zero or take the root of a negative number), the
remaining picks follow the frozen gains in descending order (ties: lower index); an image whose
patches are all equally relevant gets r = 1 (the official rescaling would divide by zero).
"""

from __future__ import annotations

import torch

from ..base import SIGNAL_PROJECTED, SIGNAL_TEXT_RELEVANCE, Selection, VisionSignals
from ..registry import register_method
from ._common import check_signal, identity_selection, unit_rows


def rescaled_relevance(text_relevance: torch.Tensor, theta: float | None = None) -> torch.Tensor:
    """The official relevance r of one image: [N] cosine -> [N] in (0, 1] (or exp(alpha r) with `theta`)."""
    rel = -text_relevance.float()
    spread = rel.max() - rel.min()
    if not spread > 0:  # every patch equally relevant (the official division would give inf): no preference
        return torch.ones_like(rel)
    rel = (rel - rel.min() + 1e-6) / spread
    if theta is not None:
        rel = torch.exp(theta / (2 * (1 - theta)) * rel)
    return rel


def conditional_kernel(embeddings: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """L = diag(r) S diag(r): embeddings [N, H], relevance [N] -> [N, N] float32, S the cosine similarity."""
    unit = unit_rows(embeddings)  # [N, H]
    similarity = unit @ unit.t()  # [N, N]
    return relevance[:, None] * similarity * relevance[None, :]


def greedy_dpp_map(kernel: torch.Tensor, k: int) -> torch.Tensor:
    """Greedy MAP picks of a DPP with kernel [N, N] (fast incremental Cholesky), in pick order -> [k]."""
    n = kernel.shape[0]
    cis = kernel.new_zeros(k, n)  # row t: the t-th Cholesky column over all items
    gains = torch.diagonal(kernel).clone()  # d_i^2 [N]
    picks = torch.empty(k, dtype=torch.long)
    exhausted = False
    for i in range(k):
        j = int(torch.nan_to_num(gains, nan=float("-inf")).argmax())
        picks[i] = j
        gain = float(gains[j])
        if not exhausted and not gain > 0.0:
            exhausted = True  # the update would divide by sqrt(<= 0): keep the gains frozen from here on
        if not exhausted:
            e = (kernel[j] - cis[:i, j] @ cis[:i]) / gain ** 0.5  # [N]
            cis[i] = e
            gains -= e * e
        gains[j] = float("-inf")
    return picks


@register_method("cdpruner", needs=[SIGNAL_PROJECTED, SIGNAL_TEXT_RELEVANCE], defaults={"theta": None})
def cdpruner(signals: VisionSignals, k: int, theta: float | None = None) -> Selection:
    """Conditional-DPP MAP subset of K tokens (similarity of LLM-input embeddings, question relevance), raster order."""
    if theta is not None and not 0.0 <= theta < 1.0:
        raise ValueError(f"pruning method 'cdpruner': theta={theta!r} must be in [0, 1); fix --pruning-args")
    feats = signals.features
    b, n = feats.shape[:2]
    if k >= n:
        return identity_selection(feats)
    projected = check_signal(SIGNAL_PROJECTED, signals.projected, feats, ndim=3, patch_dim=1)  # [B, N, H]
    relevance = check_signal(SIGNAL_TEXT_RELEVANCE, signals.text_relevance, feats, ndim=2, patch_dim=1)  # [B, N]
    # One image at a time: its arithmetic is then the same alone as in a batch (greedy picks are bit-sensitive).
    picks = []
    for i in range(b):
        kernel = conditional_kernel(projected[i], rescaled_relevance(relevance[i], theta))  # [N, N]
        picks.append(greedy_dpp_map(kernel, k))
    return Selection(indices=torch.stack(picks).sort(dim=-1).values.to(feats.device))  # [B, K]
