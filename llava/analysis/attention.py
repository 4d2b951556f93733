"""Attention that image tokens receive in the LLM, measured through the attention probe.

The LLM keeps its SDPA/flash attention. The probe (`llava.probe.QKProbe`) captures the q/k
projection outputs of each chosen decoder layer and hands them over one layer at a time
(`on_layer`, `keep=False`), so memory holds one layer's q/k at most. The query rows the analyses
need become attention through `llava.probe.head_mean_rows`: the model's own rotary tables in
float32 (`rope_tables`), grouped-query heads, the causal and padding masks, softmax in float32, in
chunks of query rows. These are the same calls FastV scores tokens with, so in half precision too
the analyses report FastV's numbers. Only fixed-size results per image ([N] vectors) are kept, and
the forward stops once the last chosen layer is measured: later layers never run.

The vision side uses the tower's own [CLS]-row attention (`cls_attn`, head mean of the selected
layer), from the same tower run that gives the features.

Shapes: B rows, T spliced sequence length, H query heads, Dh head width, N image tokens (576).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from llava import compat
from llava.probe import Captured, HeadGeometry, QKProbe, head_mean_rows, rope_tables
from llava.pruning.base import SIGNAL_CLS_ATTN


@dataclass
class ImageAttention:
    """Head-mean attention one image's N tokens receive in one layer (each [N], float32).

    all_queries: from every query that can see the token (image and text, causal), divided by
        how many queries can see it; image_queries: the same over image queries only;
    text_queries: mean over the (valid) text queries after the image; last_token: from the last
        prompt token. The first three are None when only the last row was computed.
    """

    last_token: torch.Tensor
    all_queries: torch.Tensor | None = None
    image_queries: torch.Tensor | None = None
    text_queries: torch.Tensor | None = None


def image_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    geometry: HeadGeometry,
    span: tuple[int, int],
    valid: torch.Tensor,
    rope: tuple[torch.Tensor, torch.Tensor] | None,
    *,
    q_start: int = 0,
    columns: bool = True,
    chunk: int = 64,
    measured: int | None = None,
) -> ImageAttention:
    """Attention received by the tokens at positions [start, end) of one sequence, head-averaged.

    measured: only the first `measured` tokens of the image block [start, end) are reported (a
    OneVision block's base view); queries inside the block still count as image queries.

    q: [1, R, H*Dh] q-projection outputs of the sequence's rows q_start..q_start+R-1 (all rows, or
    just the last); k: [1, T, Hkv*Dh]; rope: float32 (cos, sin) [1, T, Dh] of the sequence's
    positions (None: no rotary embedding); valid: [T] bool attention mask (False = padding). Query
    i may attend key j iff j <= i and valid[j]. With `columns`, query rows start..last are
    processed `chunk` rows at a time and their image columns summed; otherwise only the last valid
    row is computed.
    """
    start, end = span
    t = k.shape[1]
    pos = torch.arange(t, device=k.device)
    valid = valid.to(device=k.device, dtype=torch.bool)
    last = int(pos[valid].max())
    if not (0 <= start < end <= last + 1):
        raise ValueError(f"image span {span} is not inside the valid tokens (last valid position {last})")
    first_row = start if columns else last
    if not (q_start <= first_row and last < q_start + q.shape[1]):
        raise ValueError(f"query rows {first_row}..{last} are needed but rows {q_start}..{q_start + q.shape[1] - 1} "
                         "were captured")

    def rows(r0: int, r1: int) -> torch.Tensor:
        """Head-mean probabilities of query rows r0..r1-1 over all T keys: [r1-r0, T] (the probe's maths)."""
        return head_mean_rows(q[:, r0 - q_start:r1 - q_start], k, geometry, q_positions=pos[r0:r1], rope=rope,
                              key_mask=valid[None], causal=True)[0]  # [1, c, T] -> [c, T]

    n = end - start if measured is None else measured
    stop = start + n  # the measured tokens are [start, stop), inside the image block [start, end)
    last_token = rows(last, last + 1)[0, start:stop]  # [N]
    if not columns:
        return ImageAttention(last_token=last_token)

    from_image = last_token.new_zeros(n)
    from_text = last_token.new_zeros(n)
    for r0 in range(start, last + 1, chunk):
        r1 = min(r0 + chunk, last + 1)
        probs = rows(r0, r1)[:, start:stop]  # [c, N]
        probs = torch.where(valid[r0:r1, None], probs, 0.0)  # padding queries count 0 (their rows may be NaN)
        is_image = pos[r0:r1] < end
        from_image += probs[is_image].sum(dim=0)
        from_text += probs[~is_image].sum(dim=0)

    # seen[t] = number of valid queries at positions >= t (and <= last).
    seen = torch.flip(torch.cumsum(torch.flip((valid & (pos <= last)).float(), [0]), 0), [0])
    seen = torch.cat([seen, seen.new_zeros(1)])  # seen[T] = 0
    seen_all = seen[start:stop]  # [N]: queries i >= j
    seen_image = seen[start:stop] - seen[end]  # [N]: image queries j <= i < end
    n_text = seen[end]
    text = from_text / n_text if n_text > 0 else torch.full_like(from_text, float("nan"))
    return ImageAttention(
        last_token=last_token,
        all_queries=(from_image + from_text) / seen_all,
        image_queries=from_image / seen_image,
        text_queries=text,
    )


class _StopForward(Exception):
    """Raised from the probe's callback once the last layer an analysis needs has been measured."""


@torch.no_grad()
def measure_llm_layers(
    llm: nn.Module,
    inputs_embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    spans: Sequence[tuple[int, int]],
    layers: Sequence[int],
    columns: bool = True,
    chunk: int = 64,
    n_measured: int | None = None,
) -> list[dict[int, ImageAttention]]:
    """Run the decoder `llm` (LlamaModel, Qwen2Model, ...) on spliced inputs and measure the chosen layers.

    inputs_embeds [B, T, D], attention_mask [B, T], position_ids [B, T]; spans: per row, the
    [start, end) of its image (`n_measured`: report only its first tokens). Returns per row {layer: ImageAttention}. The probe streams one layer
    at a time; the forward stops after the last chosen layer. Without `columns` and with
    left-padded rows only the last query row is captured.
    """
    _, decoder_layers, _, rotary = compat.decoder_parts(llm)
    wanted = resolve_layers(layers, len(decoder_layers))
    valid = attention_mask.bool()  # [B, T]
    t = valid.shape[1]
    left_padded = bool(valid[:, -1].all())
    q_rows = slice(-1, None) if not columns and left_padded else None  # the last prompt token only
    q_start = t - 1 if q_rows is not None else 0
    cos, sin = rope_tables(rotary, position_ids)  # float32 [B, T, Dh], as FastV's scores use
    geometry = {i: HeadGeometry.of(decoder_layers[i].self_attn) for i in wanted}
    measured: list[dict[int, ImageAttention]] = [dict() for _ in spans]

    def on_layer(idx: int, cap: Captured) -> None:
        for b, span in enumerate(spans):
            measured[b][idx] = image_attention(cap.q[b:b + 1], cap.k[b:b + 1], geometry[idx], span, valid[b],
                                               (cos[b:b + 1], sin[b:b + 1]), q_start=q_start, columns=columns,
                                               chunk=chunk, measured=n_measured)
        if idx == wanted[-1]:
            raise _StopForward

    probe = QKProbe({i: decoder_layers[i].self_attn for i in wanted}, q_rows=q_rows, on_layer=on_layer, keep=False)
    try:
        with probe.attached():
            llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    except _StopForward:
        return measured
    raise RuntimeError(f"the forward pass finished without reaching LLM layer {wanted[-1]}")


@dataclass
class PrefillAttention:
    """What one prefill pass measured for row b of the batch."""

    layers: dict[int, ImageAttention]  # LLM layer -> attention the image tokens receive
    cls_attn: torch.Tensor  # [N] vision-tower [CLS] attention of the same image
    span: tuple[int, int]  # [start, end) of the image tokens in the spliced row
    length: int  # valid (non-padding) tokens in the row


@torch.no_grad()
def run_prefill(
    model,
    input_ids: torch.Tensor,
    images: torch.Tensor,
    attention_mask: torch.Tensor | None,
    layers: Sequence[int],
    columns: bool = True,
    chunk: int = 64,
    image_sizes: Sequence | None = None,
) -> list[PrefillAttention]:
    """Splice one image per row (unpruned), run the LLM prefill and measure the chosen layers.

    input_ids [B, L] with one IMAGE_TOKEN_INDEX per row, images [B, 3, S, S]. The image positions
    come from the splice (`MultimodalInputs.image_spans`). Layers past the last chosen one are not run.

    Views per image (OneVision through `model.family_inputs`, with its processor's input_ids;
    LLaVA-NeXT's anyres) come as B x [P_i, 3, S, S] with `image_sizes` as the family takes them. Their
    image block starts with the base view's N tokens, and those are the ones measured (the same
    N = side^2 grid for every image, so they average over samples); `cls_attn` is the tower's row on
    the base view ([CLS] on CLIP, the stand-in on SigLIP).
    """
    layers = resolve_layers(layers, model.config.num_hidden_layers)
    if model.family_inputs is not None or model.is_anyres():
        mm = model.prepare_multimodal_inputs(input_ids, images, attention_mask, image_sizes=image_sizes,
                                             visual_token_num=None, padding_side="left")
        base = torch.stack([views[0] for views in images])  # [B, 3, S, S] the base views
        cls_attn = model.get_vision_tower()(base, needs=frozenset({SIGNAL_CLS_ATTN})).cls_attn  # [B, N]
        n_patches = cls_attn.shape[1]
        check = lambda span: span[1] - span[0] >= n_patches  # noqa: E731  (base view first, then the grid)
    else:
        # One tower run gives both the features and the [CLS] row of the same layer.
        signals = model.vision_signals(images, needs=frozenset({SIGNAL_CLS_ATTN}))
        mm = model.prepare_multimodal_inputs(input_ids, None, attention_mask, visual_token_num=None,
                                             padding_side="left", signals=signals)
        cls_attn = signals.cls_attn  # [B, N]
        n_patches = cls_attn.shape[1]
        check = lambda span: span[1] - span[0] == n_patches  # noqa: E731
    for b, spans in enumerate(mm.image_spans):
        if len(spans) != 1 or not check(spans[0]):
            raise ValueError(f"row {b}: expected one image of {n_patches} tokens in the spliced prompt, "
                             f"got spans {spans} (one <image> per prompt, unpruned, not truncated)")
    spans = [row[0] for row in mm.image_spans]
    measured = measure_llm_layers(model.get_model(), mm.inputs_embeds, mm.attention_mask, mm.position_ids, spans,
                                  layers, columns, chunk, n_measured=n_patches)
    lengths = mm.attention_mask.sum(dim=1).tolist()
    return [PrefillAttention(measured[b], cls_attn[b].float(), spans[b], int(lengths[b])) for b in range(len(spans))]


def resolve_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Sorted unique layer indices in 0..num_layers-1 (negative ones count from the end)."""
    out = set()
    for i in layers:
        i = int(i)
        if not -num_layers <= i < num_layers:
            raise ValueError(f"LLM layer {i} is out of range for a {num_layers}-layer model "
                             f"(use 0..{num_layers - 1}, or negative indices from the end)")
        out.add(i % num_layers)
    if not out:
        raise ValueError("no LLM layer chosen")
    return sorted(out)
