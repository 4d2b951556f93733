"""Attention that image tokens receive in the LLM, from each decoder layer's own q/k projections.

The LLM keeps its SDPA/flash attention. Forward hooks keep each chosen layer's `q_proj` output
and, when its `k_proj` fires, rebuild the attention probabilities for the query rows the analyses
need: rotary embedding (transformers' `apply_rotary_pos_emb`, with the cos/sin of the model's own
`rotary_emb` for the positions it was given), key heads repeated for GQA, causal mask and the
padding mask, softmax(q k^T * scale) in float32, in chunks of query rows. Only fixed-size results
per image ([N] vectors) leave the hook; no [B, H, T, T] map is ever stored.

The vision side uses the tower's own [CLS]-row attention (`cls_attn`, head mean of the selected
layer), requested through a forward pre-hook on the tower so the image is encoded once.

Shapes: B rows, T spliced sequence length, H query heads, Dh head dim, N image tokens (576).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

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
    scale: float,
    span: tuple[int, int],
    valid: torch.Tensor,
    columns: bool = True,
    chunk: int = 64,
) -> ImageAttention:
    """Attention received by the tokens at positions [start, end) of one sequence, head-averaged.

    q, k: [H, T, Dh] float32 with the rotary embedding applied and key heads already repeated;
    valid: [T] bool attention mask (False = padding). Query i may attend key j iff j <= i and
    valid[j]. With `columns`, query rows start..last are processed `chunk` rows at a time and
    their image columns summed; otherwise only the last valid row is computed.
    """
    start, end = span
    t = q.shape[1]
    pos = torch.arange(t, device=q.device)
    valid = valid.to(device=q.device, dtype=torch.bool)
    last = int(pos[valid].max())
    if not (0 <= start < end <= last + 1):
        raise ValueError(f"image span {span} is not inside the valid tokens (last valid position {last})")

    def rows(r0: int, r1: int) -> torch.Tensor:
        """Head-mean probabilities of query rows r0..r1-1 over keys 0..m-1, m = max(r1, end): [r1-r0, m].

        Keys after the last query of the chunk are masked anyway; they are computed up to `end`
        only so that every image column exists.
        """
        m = max(r1, end)
        scores = torch.matmul(q[:, r0:r1], k[:, :m].transpose(-1, -2)) * scale  # [H, c, m]
        allowed = (pos[None, :m] <= pos[r0:r1, None]) & valid[None, :m]  # [c, m]
        scores = scores.masked_fill(~allowed, float("-inf"))
        return scores.softmax(dim=-1).mean(dim=0)  # [H, c, m] -> [c, m]

    last_token = rows(last, last + 1)[0, start:end]  # [N]
    if not columns:
        return ImageAttention(last_token=last_token)

    n = end - start
    from_image = q.new_zeros(n)
    from_text = q.new_zeros(n)
    for r0 in range(start, last + 1, chunk):
        r1 = min(r0 + chunk, last + 1)
        probs = rows(r0, r1)[:, start:end]  # [c, N]
        probs = torch.where(valid[r0:r1, None], probs, 0.0)  # padding queries count 0 (their rows may be NaN)
        is_image = pos[r0:r1] < end
        from_image += probs[is_image].sum(dim=0)
        from_text += probs[~is_image].sum(dim=0)

    # seen[t] = number of valid queries at positions >= t (and <= last).
    seen = torch.flip(torch.cumsum(torch.flip((valid & (pos <= last)).float(), [0]), 0), [0])
    seen = torch.cat([seen, seen.new_zeros(1)])  # seen[T] = 0
    seen_all = seen[start:end]  # [N]: queries i >= j
    seen_image = seen[start:end] - seen[end]  # [N]: image queries j <= i < end
    n_text = seen[end]
    text = from_text / n_text if n_text > 0 else torch.full_like(from_text, float("nan"))
    return ImageAttention(
        last_token=last_token,
        all_queries=(from_image + from_text) / seen_all,
        image_queries=from_image / seen_image,
        text_queries=text,
    )


class _StopForward(Exception):
    """Raised from a hook once the last layer an analysis needs has been measured."""


LayerCallback = Callable[[int, torch.Tensor, torch.Tensor, float], None]


@contextmanager
def llm_qk_hooks(
    model, layers: Sequence[int], on_layer: LayerCallback, stop_after: int | None = None
) -> Iterator[None]:
    """Call `on_layer(layer, q, k, scale)` for each chosen decoder layer during a forward pass.

    q: [B, H, T, Dh], k: [B, H, T, Dh], float32, rotary applied, key heads repeated to H. With
    `stop_after`, the forward is abandoned after that layer's callback (use `run_prefill`, which
    swallows the stop).
    """
    llm = model.get_model()
    wanted = sorted(set(layers))
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def keep_rotary(module, args, kwargs, output):
        position_ids = kwargs.get("position_ids", args[1] if len(args) > 1 else None)
        cos, sin = output
        if cos.dtype != torch.float32:  # recompute in float32 with the model's own rotary module
            cos, sin = module.forward(torch.empty(0, device=cos.device, dtype=torch.float32), position_ids)
        captured["cos"], captured["sin"] = cos, sin

    def keep_q(idx: int):
        def hook(_module, _inputs, output):
            captured[f"q{idx}"] = output

        return hook

    def on_k(idx: int, attn):
        def hook(_module, _inputs, output):
            q = captured.pop(f"q{idx}")
            b, t, _ = q.shape
            dh = attn.head_dim
            q = q.float().view(b, t, -1, dh).transpose(1, 2)  # [B, T, H*Dh] -> [B, H, T, Dh]
            k = output.float().view(b, t, -1, dh).transpose(1, 2)  # [B, T, KV*Dh] -> [B, KV, T, Dh]
            q, k = apply_rotary_pos_emb(q, k, captured["cos"], captured["sin"])
            k = repeat_kv(k, attn.num_key_value_groups)  # [B, KV, T, Dh] -> [B, H, T, Dh]
            on_layer(idx, q, k, attn.scaling)
            if stop_after is not None and idx == stop_after:
                raise _StopForward

        return hook

    handles.append(llm.rotary_emb.register_forward_hook(keep_rotary, with_kwargs=True))
    for idx in wanted:
        attn = llm.layers[idx].self_attn
        handles.append(attn.q_proj.register_forward_hook(keep_q(idx)))
        handles.append(attn.k_proj.register_forward_hook(on_k(idx, attn)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


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
) -> list[PrefillAttention]:
    """Splice one image per row (unpruned), run the LLM prefill and measure the chosen layers.

    input_ids [B, L] with one IMAGE_TOKEN_INDEX per row, images [B, 3, S, S]. The image positions
    come from the splice (`MultimodalInputs.image_spans`). Layers past the last chosen one are not run.
    """
    layers = resolve_layers(layers, model.config.num_hidden_layers)
    # One tower run gives both the features and the [CLS] row of the same layer.
    signals = model.vision_signals(images, needs=frozenset({SIGNAL_CLS_ATTN}))
    mm = model.prepare_multimodal_inputs(input_ids, None, attention_mask, None, None, "left", signals=signals)
    cls_attn = signals.cls_attn  # [B, N]
    n_patches = cls_attn.shape[1]
    for b, spans in enumerate(mm.image_spans):
        if len(spans) != 1 or spans[0][1] - spans[0][0] != n_patches:
            raise ValueError(f"row {b}: expected one image of {n_patches} tokens in the spliced prompt, "
                             f"got spans {spans} (one <image> per prompt, unpruned, not truncated)")
    valid = mm.attention_mask.bool()  # [B, T]
    measured: list[dict[int, ImageAttention]] = [dict() for _ in mm.image_spans]

    def on_layer(idx: int, q: torch.Tensor, k: torch.Tensor, scale: float) -> None:
        for b, spans in enumerate(mm.image_spans):
            measured[b][idx] = image_attention(q[b], k[b], scale, spans[0], valid[b], columns, chunk)

    try:
        with llm_qk_hooks(model, layers, on_layer, stop_after=layers[-1]):
            model.get_model()(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask,
                              position_ids=mm.position_ids, use_cache=False)
    except _StopForward:
        pass
    return [PrefillAttention(measured[b], cls_attn[b].float(), mm.image_spans[b][0], int(valid[b].sum()))
            for b in range(len(measured))]


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
