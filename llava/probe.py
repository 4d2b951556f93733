"""The attention probe: capture q/k of chosen layers and compute query-row attention in float32.

This is the only module of the package that hooks q/k projections. The models keep running with
SDPA or flash attention; the probe records the projection outputs of the layers it is asked for
and computes the attention of the query rows that matter ([CLS], the last prompt token, a chunk of
queries) without ever building a [B, H, T, T] map.

Shapes: B batch, T tokens, H query heads, Hkv key heads (GQA when Hkv < H), Dh head width,
R chosen query rows.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class HeadGeometry:
    """How a layer's projections split into heads."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    scale: float

    @classmethod
    def of(cls, attn: nn.Module) -> "HeadGeometry":
        """Read the geometry from an attention module (CLIP, SigLIP, LLaMA and Qwen name these alike)."""
        config = getattr(attn, "config", None)
        heads = getattr(attn, "num_heads", None) or config.num_attention_heads
        head_dim = getattr(attn, "head_dim", None) or attn.embed_dim // heads
        kv_heads = getattr(attn, "num_key_value_heads", None) or getattr(config, "num_key_value_heads", None) or heads
        scale = getattr(attn, "scaling", None) or getattr(attn, "scale", None) or head_dim**-0.5
        return cls(int(heads), int(kv_heads), int(head_dim), float(scale))


@dataclass
class Captured:
    """q/k projection outputs of one layer.

    q: [B, R, H*Dh] (only the rows asked for) or None; k: [B, T, Hkv*Dh].
    """

    q: torch.Tensor | None = None
    k: torch.Tensor | None = None


@dataclass
class QKProbe:
    """Forward hooks that keep q (some rows or all) and k of chosen attention modules.

    attn: layer index -> attention module with q_proj/k_proj (or a fused `qkv` / `qkv_proj` linear,
    whose output is split as [q | k | v]). q_rows: which query rows to keep (a slice; None keeps all, [] none).
    on_layer: called as on_layer(index, Captured) once a layer's q and k are in; the layer's tensors
    are then dropped unless `keep` is True.
    """

    attn: Mapping[int, nn.Module]
    q_rows: slice | None = None
    keep_q: bool = True
    on_layer: Callable[[int, Captured], None] | None = None
    keep: bool = True
    captured: dict[int, Captured] = field(default_factory=dict)

    def _done(self, idx: int) -> None:
        cap = self.captured[idx]
        if cap.k is None or (self.keep_q and cap.q is None):
            return
        if self.on_layer is not None:
            self.on_layer(idx, cap)
            if not self.keep:
                del self.captured[idx]

    def _rows(self, q: torch.Tensor) -> torch.Tensor:
        return q if self.q_rows is None else q[:, self.q_rows]

    def _hooks(self, idx: int, module: nn.Module) -> list:
        slot = lambda: self.captured.setdefault(idx, Captured())  # noqa: E731
        if hasattr(module, "q_proj"):
            def on_q(_m, _i, out):
                slot().q = self._rows(out)
                self._done(idx)

            def on_k(_m, _i, out):
                slot().k = out
                self._done(idx)

            handles = [module.k_proj.register_forward_hook(on_k)]
            if self.keep_q:
                handles.append(module.q_proj.register_forward_hook(on_q))
            return handles
        fused = getattr(module, "qkv", None) or getattr(module, "qkv_proj", None)
        if fused is not None:  # fused projection (Qwen ViT blocks; vLLM's CLIP, whose linears return (out, bias))
            def on_qkv(_m, _i, out):
                if isinstance(out, tuple):
                    out = out[0]
                q, k, _ = out.chunk(3, dim=-1)
                cap = slot()
                cap.k = k
                if self.keep_q:
                    cap.q = self._rows(q)
                self._done(idx)

            return [fused.register_forward_hook(on_qkv)]
        raise TypeError(f"layer {idx}: {type(module).__name__} has neither q_proj/k_proj nor a fused qkv")

    @contextmanager
    def attached(self) -> Iterator["QKProbe"]:
        handles = [h for idx, module in self.attn.items() for h in self._hooks(idx, module)]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


# ---- RoPE ---------------------------------------------------------------------------------------
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in float32. x [B, H, T, Dh]; cos/sin [B, T, Dh] (or [1, T, Dh])."""
    cos, sin = cos.float().unsqueeze(1), sin.float().unsqueeze(1)  # [B, 1, T, Dh]
    x = x.float()
    return x * cos + rotate_half(x) * sin


def multi_axis_rope(
    cos: torch.Tensor, sin: torch.Tensor, sections: Sequence[int], interleaved: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine per-axis rotary tables into one (M-RoPE: temporal, height, width).

    cos/sin [A, B, T, Dh] hold one table per position axis, each the usual [freqs | freqs] layout.
    Blocked (Qwen2-VL, Qwen2.5-VL): the Dh/2 frequency bands are split into `sections` and block j
    takes axis j. Interleaved (Qwen3-VL): band f takes axis f % A while f < A * sections[axis], else
    axis 0. -> cos/sin [B, T, Dh].
    """
    axes, half = cos.shape[0], cos.shape[-1] // 2
    if sum(sections) != half:
        raise ValueError(f"M-RoPE sections {list(sections)} do not cover head width {cos.shape[-1]} (need sum = Dh/2)")
    axis = torch.zeros(half, dtype=torch.long)
    if interleaved:
        for a in range(1, axes):
            axis[a:sections[a] * axes:axes] = a
    else:
        axis = torch.cat([torch.full((n,), j % axes, dtype=torch.long) for j, n in enumerate(sections)])
    axis = torch.cat([axis, axis]).to(cos.device)  # [Dh]: which axis each band reads
    pick = lambda t: t.gather(0, axis.expand(1, *t.shape[1:]))[0]  # noqa: E731
    return pick(cos), pick(sin)


@torch.no_grad()
def rope_tables(rotary_emb: nn.Module, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A model's own rotary tables in float32 for position_ids [B, T] (or [A, B, T] for M-RoPE)."""
    probe = torch.empty(0, dtype=torch.float32, device=position_ids.device)
    cos, sin = rotary_emb(probe, position_ids)
    return cos.float(), sin.float()


# ---- attention rows -----------------------------------------------------------------------------
def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, heads*Dh] -> [B, heads, T, Dh]."""
    b, t, _ = x.shape
    return x.view(b, t, heads, -1).transpose(1, 2)


def attention_rows(
    q: torch.Tensor,
    k: torch.Tensor,
    geometry: HeadGeometry,
    *,
    q_positions: torch.Tensor | None = None,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    key_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Softmax attention of R query rows over all T keys, per head, in float32.

    q: [B, R, H*Dh] projection outputs of the chosen rows; k: [B, T, Hkv*Dh].
    q_positions: [B, R] or [R] indices of the rows in the sequence (needed for RoPE and causality).
    rope: (cos, sin) [B or 1, T, Dh] for every sequence position; key_mask: [B, T] bool, False =
    padding. causal: a row sees only keys at or before its own index. -> [B, H, R, T]; a row that
    sees no key at all (a padding query) is zeros.
    """
    b, r, _ = q.shape
    t = k.shape[1]
    qh = split_heads(q, geometry.num_heads).float()  # [B, H, R, Dh]
    kh = split_heads(k, geometry.num_kv_heads).float()  # [B, Hkv, T, Dh]
    if (rope is not None or causal) and q_positions is None:
        raise ValueError("attention_rows: RoPE and causal masking need q_positions")
    if q_positions is not None:
        q_positions = q_positions.to(q.device).expand(b, r) if q_positions.ndim == 1 else q_positions.to(q.device)
    if rope is not None:
        cos, sin = (x.to(q.device).expand(b, -1, -1) for x in rope)  # [B, T, Dh]
        rows = torch.arange(b, device=q.device)[:, None]
        qh = apply_rope(qh, cos[rows, q_positions], sin[rows, q_positions])
        kh = apply_rope(kh, cos, sin)
    if geometry.num_kv_heads != geometry.num_heads:
        kh = kh.repeat_interleave(geometry.num_heads // geometry.num_kv_heads, dim=1)  # [B, H, T, Dh]
    logits = torch.matmul(qh, kh.transpose(-1, -2)) * geometry.scale  # [B, H, R, T]
    visible = None
    if key_mask is not None:
        visible = key_mask.to(q.device).bool()[:, None, :].expand(b, r, t)  # [B, R, T]
    if causal:
        order = torch.arange(t, device=q.device)[None, None] <= q_positions[:, :, None]  # [B, R, T]
        visible = order if visible is None else visible & order
    if visible is None:
        return logits.softmax(dim=-1)
    logits = logits.masked_fill(~visible[:, None], float("-inf"))
    return logits.softmax(dim=-1).nan_to_num(0.0)  # a row that sees no key (padding) is all zeros


def head_mean_rows(q: torch.Tensor, k: torch.Tensor, geometry: HeadGeometry, **kwargs) -> torch.Tensor:
    """`attention_rows` averaged over heads: -> [B, R, T]."""
    return attention_rows(q, k, geometry, **kwargs).mean(dim=1)


def received_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    geometry: HeadGeometry,
    *,
    query_mask: torch.Tensor | None = None,
    chunk: int = 256,
    **kwargs,
) -> torch.Tensor:
    """Mean attention each key receives from the queries, averaged over heads and queries.

    q: [B, T, H*Dh] all query rows, k: [B, T, Hkv*Dh]; query_mask [B, T] bool picks the queries that
    count (default all). Rows are processed `chunk` at a time, so at most [B, H, chunk, T] exists.
    kwargs go to `attention_rows` (rope, key_mask, causal). -> [B, T].
    """
    b, t, _ = q.shape
    total = torch.zeros(b, k.shape[1], dtype=torch.float32, device=q.device)
    weight = torch.ones(b, t, dtype=torch.float32, device=q.device) if query_mask is None else query_mask.float()
    for start in range(0, t, chunk):
        rows = torch.arange(start, min(start + chunk, t), device=q.device)
        probs = attention_rows(q[:, rows], k, geometry, q_positions=rows, **kwargs).mean(dim=1)  # [B, r, T]
        total += torch.einsum("br,brt->bt", weight[:, rows], probs)
    return total / weight.sum(dim=1, keepdim=True).clamp(min=1)
