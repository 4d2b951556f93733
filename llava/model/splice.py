"""LLaVA's splice: every `<image>` sentinel (IMAGE_TOKEN_INDEX) in the prompt becomes that image's kept tokens.

The splice builds what the LLM receives: the embeddings, the attention mask, 1-D position ids and
labels, re-padded on one side, plus where each image's tokens landed (for in-LLM methods and the
analyses). A family with other placeholders or multi-axis positions gives its model another splice
function of the same signature.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX

from .context import ContextOverflowError, ContextOverflowWarning


@dataclass
class MultimodalInputs:
    """What the LLM receives after the splice."""

    inputs_embeds: torch.Tensor  # [B, L', H]
    attention_mask: torch.Tensor  # [B, L'] long
    position_ids: torch.Tensor  # [B, L'] long
    labels: torch.Tensor | None  # [B, L'] or None
    image_spans: list[list[tuple[int, int]]] = field(default_factory=list)  # per row: [start, end) of each image
    encoded: Any = None  # the EncodedImages the visual tokens came from


def splice_image_tokens(
    input_ids: torch.LongTensor,
    image_feats: Sequence[torch.Tensor],
    embed,
    attention_mask: torch.Tensor | None,
    labels: torch.LongTensor | None,
    padding_side: str,
    max_len: int | None,
    truncate_prompts: bool = False,
    encoded: Any = None,
) -> MultimodalInputs:
    """input_ids [B, L] with IMAGE_TOKEN_INDEX placeholders, image_feats n_img x [K_i, H] in reading order.

    Padding in `input_ids` (attention_mask == 0) is dropped and the rows are re-padded on
    `padding_side`. A row longer than `max_len` raises ContextOverflowError naming it, unless
    `truncate_prompts` cuts it (with a ContextOverflowWarning).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    attention_mask = attention_mask.bool()
    text_embeds = embed(input_ids.clamp(min=0))  # [B, L, H]; placeholder rows are dropped below

    rows_embeds, rows_labels, spans = [], [], []
    next_image = 0
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b]
        ids, emb = input_ids[b][keep], text_embeds[b][keep]
        lab = labels[b][keep] if labels is not None else None
        cuts = [-1] + torch.nonzero(ids == IMAGE_TOKEN_INDEX).flatten().tolist() + [ids.shape[0]]
        pieces, piece_labels, row_spans, pos = [], [], [], 0
        for i in range(len(cuts) - 1):
            start, end = cuts[i] + 1, cuts[i + 1]
            pieces.append(emb[start:end])
            if lab is not None:
                piece_labels.append(lab[start:end])
            pos += end - start
            if i < len(cuts) - 2:
                feat = image_feats[next_image].to(device=emb.device, dtype=emb.dtype)
                next_image += 1
                pieces.append(feat)
                if lab is not None:
                    piece_labels.append(torch.full((feat.shape[0],), IGNORE_INDEX, dtype=lab.dtype, device=lab.device))
                row_spans.append((pos, pos + feat.shape[0]))
                pos += feat.shape[0]
        row = torch.cat(pieces)
        row_lab = torch.cat(piece_labels) if lab is not None else None
        if max_len is not None and row.shape[0] > max_len:
            if not truncate_prompts:
                raise ContextOverflowError(b, row.shape[0], max_len)
            warnings.warn(ContextOverflowWarning(b, row.shape[0], max_len), stacklevel=2)
            row = row[:max_len]
            row_lab = row_lab[:max_len] if row_lab is not None else None
        rows_embeds.append(row)
        rows_labels.append(row_lab)
        spans.append(row_spans)

    return _pad_rows(rows_embeds, rows_labels, spans, padding_side, encoded)


def _pad_rows(
    rows: list[torch.Tensor],
    row_labels: list[torch.Tensor | None],
    spans: list[list[tuple[int, int]]],
    padding_side: str,
    encoded: Any,
) -> MultimodalInputs:
    """Stack variable-length rows [L_b, H] into [B, L', H] with mask, positions and labels."""
    batch, width = len(rows), max(r.shape[0] for r in rows)
    ref = rows[0]
    embeds = ref.new_zeros(batch, width, ref.shape[-1])
    mask = torch.zeros(batch, width, dtype=torch.long, device=ref.device)
    positions = torch.zeros(batch, width, dtype=torch.long, device=ref.device)
    has_labels = row_labels[0] is not None
    labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long, device=ref.device) if has_labels else None
    for b, row in enumerate(rows):
        n = row.shape[0]
        sl = slice(width - n, width) if padding_side == "left" else slice(0, n)
        embeds[b, sl] = row
        mask[b, sl] = 1
        positions[b, sl] = torch.arange(n, device=ref.device)
        if has_labels:
            labels[b, sl] = row_labels[b]
        if padding_side == "left":
            spans[b] = [(s + width - n, e + width - n) for s, e in spans[b]]
    return MultimodalInputs(embeds, mask, positions, labels, spans, encoded)
