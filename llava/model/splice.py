"""LLaVA's splice: every `<image>` sentinel (IMAGE_TOKEN_INDEX) in the prompt becomes that image's kept tokens.

The splice builds what the LLM receives: the embeddings, the attention mask, 1-D position ids and
labels, re-padded on one side, plus where each image's tokens landed (for in-LLM methods and the
analyses). A family with other placeholders or multi-axis positions gives its model another splice
function of the same signature.

Positions (`PruningConfig.position_mode`):
- "compact" (the default, None): 0, 1, 2, ... over the spliced row, as if the pruned tokens never
  existed (FasterVLM's official layout).
- "keep": every token keeps the position it has in the unpruned layout. An image whose block is N_i
  tokens long in the unpruned LLM advances the position by N_i; its kept token at offset j of that
  block sits at s + j (s: where the block starts). The offsets come from the encoder
  (`EncodedImages.unpruned_slots`); a token at no slot of the unpruned block (a merging method's
  [CLS] or new token) cannot keep a position, and is refused.
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
    position_mode: str | None = None,
) -> MultimodalInputs:
    """input_ids [B, L] with IMAGE_TOKEN_INDEX placeholders, image_feats n_img x [K_i, H] in reading order.

    Padding in `input_ids` (attention_mask == 0) is dropped and the rows are re-padded on
    `padding_side`. A row longer than `max_len` raises ContextOverflowError naming it, unless
    `truncate_prompts` cuts it (with a ContextOverflowWarning). position_mode: "compact" (None) or
    "keep" (see the module's docstring; needs `encoded.unpruned_slots` for pruned images).
    """
    keep_positions = check_position_mode(position_mode) == "keep"
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids, dtype=torch.bool)
    attention_mask = attention_mask.bool()
    text_embeds = embed(input_ids.clamp(min=0))  # [B, L, H]; placeholder rows are dropped below

    rows_embeds, rows_labels, rows_pos, spans = [], [], [], []
    next_image = 0
    for b in range(input_ids.shape[0]):
        keep = attention_mask[b]
        ids, emb = input_ids[b][keep], text_embeds[b][keep]
        lab = labels[b][keep] if labels is not None else None
        cuts = [-1] + torch.nonzero(ids == IMAGE_TOKEN_INDEX).flatten().tolist() + [ids.shape[0]]
        pieces, piece_labels, row_spans, pos = [], [], [], 0
        piece_pos, at = [], 0  # "keep": the positions of the pieces, and where the unpruned layout has got to
        for i in range(len(cuts) - 1):
            start, end = cuts[i] + 1, cuts[i + 1]
            pieces.append(emb[start:end])
            if lab is not None:
                piece_labels.append(lab[start:end])
            pos += end - start
            piece_pos.append(torch.arange(at, at + end - start))
            at += end - start
            if i < len(cuts) - 2:
                feat = image_feats[next_image].to(device=emb.device, dtype=emb.dtype)
                if keep_positions:
                    block, offsets = unpruned_offsets(encoded, next_image, feat.shape[0])
                    piece_pos.append(at + offsets)
                    at += block
                next_image += 1
                pieces.append(feat)
                if lab is not None:
                    piece_labels.append(torch.full((feat.shape[0],), IGNORE_INDEX, dtype=lab.dtype, device=lab.device))
                row_spans.append((pos, pos + feat.shape[0]))
                pos += feat.shape[0]
        row = torch.cat(pieces)
        row_lab = torch.cat(piece_labels) if lab is not None else None
        row_pos = torch.cat(piece_pos) if keep_positions else None
        if max_len is not None and row.shape[0] > max_len:
            if not truncate_prompts:
                raise ContextOverflowError(b, row.shape[0], max_len)
            warnings.warn(ContextOverflowWarning(b, row.shape[0], max_len), stacklevel=2)
            row = row[:max_len]
            row_lab = row_lab[:max_len] if row_lab is not None else None
            row_pos = row_pos[:max_len] if row_pos is not None else None
        rows_embeds.append(row)
        rows_labels.append(row_lab)
        rows_pos.append(row_pos)
        spans.append(row_spans)

    return _pad_rows(rows_embeds, rows_labels, spans, padding_side, encoded,
                     rows_pos if keep_positions else None)


def check_position_mode(mode: str | None) -> str:
    """The LLaVA layouts' position mode: None -> "compact"; anything outside POSITION_MODES raises."""
    from llava.pruning.config import POSITION_MODES

    mode = "compact" if mode is None else mode
    if mode not in POSITION_MODES:
        raise ValueError(f"position mode {mode!r}: must be one of {list(POSITION_MODES)}")
    return mode


def unpruned_offsets(encoded: Any, image: int, num_tokens: int) -> tuple[int, torch.Tensor]:
    """Image `image`'s block length in the unpruned LLM and its `num_tokens` tokens' offsets in it [K] long.

    Raises (one line, naming the image) when the encoder gave no layout, or a token stands at no slot.
    """
    layout = getattr(encoded, "unpruned_slots", None)
    kept = getattr(encoded, "kept_indices", None)
    if layout is None and kept is not None and image < len(kept) and kept[image] is None:
        return num_tokens, torch.arange(num_tokens)  # nothing pruned: the unpruned block itself
    if layout is None or image >= len(layout) or layout[image] is None:
        raise ValueError(f"position_mode='keep': image {image}'s encoder gives no unpruned layout of its visual "
                         "tokens; use position_mode='compact'")
    block, offsets = layout[image]
    if offsets is None:
        if num_tokens != block:
            raise ValueError(f"position_mode='keep': image {image} has {num_tokens} tokens but its unpruned block "
                             f"holds {block}")
        return block, torch.arange(block)
    offsets = torch.as_tensor(offsets, dtype=torch.long).cpu()
    if len(offsets) != num_tokens or bool((offsets < 0).any()):
        raise ValueError(f"position_mode='keep': image {image} holds tokens at no slot of the unpruned layout (a "
                         "merging method's new or [CLS] tokens), which have no unpruned position; use "
                         "position_mode='compact'")
    return block, offsets


def _pad_rows(
    rows: list[torch.Tensor],
    row_labels: list[torch.Tensor | None],
    spans: list[list[tuple[int, int]]],
    padding_side: str,
    encoded: Any,
    row_positions: list[torch.Tensor] | None = None,
) -> MultimodalInputs:
    """Stack variable-length rows [L_b, H] into [B, L', H] with mask, positions and labels.

    row_positions: each row's positions [L_b] (default: 0 .. L_b - 1); padding takes 0.
    """
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
        positions[b, sl] = torch.arange(n, device=ref.device) if row_positions is None else \
            row_positions[b].to(ref.device)
        if has_labels:
            labels[b, sl] = row_labels[b]
        if padding_side == "left":
            spans[b] = [(s + width - n, e + width - n) for s, e in spans[b]]
    return MultimodalInputs(embeds, mask, positions, labels, spans, encoded)
