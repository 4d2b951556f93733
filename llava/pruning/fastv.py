"""FastV inside the LLM: from layer L on, keep only the K image tokens that the last prompt token
attended to most at layer L-1 (head mean), as in FastV (arXiv 2403.06764).

The scores come from hooks on layer L-1's own q/k projections (RoPE applied here, GQA handled), for
the last query row only: no eager attention and no [B, H, T, T] map. Pruned image tokens are then
blocked as attention keys in layers L.. (prefill and every decode step). For the kept tokens this is
exactly the same computation as removing the pruned ones, which the tests check against an explicit
removal; it keeps the KV cache and position ids of HF's generation loop intact.
Token accounting: layers < L see all N image tokens, layers >= L see K, so the layer-averaged count
is (L * N + (T - L) * K) / T for an LLM of T layers.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from .base import Selection, VisionSignals, topk_raster
from .registry import register_method


def fastv_budget(n: int, k: int | None, ratio: float | None) -> int:
    """The K FastV keeps for an image of n tokens."""
    if ratio is not None:
        if not 0 <= ratio < 1:
            raise ValueError(f"fastv ratio (the pruned share R) must be in [0, 1), got {ratio}")
        return max(1, round(n * (1 - ratio)))
    return n if k is None else min(k, n)


def layer_averaged_tokens(n: int, k: int, layer: int, num_layers: int) -> float:
    """Visual tokens per LLM layer, averaged over all layers."""
    layer = min(layer, num_layers)
    return (layer * n + (num_layers - layer) * k) / num_layers


def last_token_attention(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, key_mask: torch.Tensor,
    last: torch.Tensor, num_kv_groups: int, scale: float,
) -> torch.Tensor:
    """Head-mean attention of each row's last prompt token over all keys, in float32.

    q: [B, T, H*D] and k: [B, T, Hkv*D] projection outputs (before RoPE); cos/sin: [B, T, D];
    key_mask: [B, T] bool (keys a query may see: not padding); last: [B] query positions -> [B, T].
    """
    b, t, _ = q.shape
    d = cos.shape[-1]
    cos, sin = cos.expand(b, -1, -1), sin.expand(b, -1, -1)  # shared position ids give batch size 1
    qh = q.view(b, t, -1, d).transpose(1, 2)  # [B, H, T, D]
    kh = k.view(b, t, -1, d).transpose(1, 2)  # [B, Hkv, T, D]
    rows = torch.arange(b, device=q.device)
    q_last = qh[rows, :, last].unsqueeze(2)  # [B, H, 1, D]
    cos_last, sin_last = cos[rows, last].unsqueeze(1), sin[rows, last].unsqueeze(1)  # [B, 1, D]
    q_last, _ = apply_rotary_pos_emb(q_last, q_last, cos_last, sin_last)
    _, kh = apply_rotary_pos_emb(kh, kh, cos, sin)
    kh = kh.repeat_interleave(num_kv_groups, dim=1)  # [B, H, T, D]
    logits = torch.matmul(q_last.float(), kh.float().transpose(-1, -2)).squeeze(2) * scale  # [B, H, T]
    visible = key_mask & (torch.arange(t, device=q.device)[None] <= last[:, None])  # causal for the last row
    logits = logits.masked_fill(~visible[:, None], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)  # [B, T]


class FastVPruner:
    """Installs FastV on a LLaVA LLM for one prefill (+ its decode steps).

    spans: per row, the [start, end) positions of each image's tokens in the prefill sequence;
    budgets: K per image (reading order); attention_mask: [B, T] prefill mask (1 = real token).
    After the prefill, `kept` holds per image the kept positions within the image (raster order).
    """

    def __init__(self, model, spans, budgets, attention_mask, layer: int = 2, ratio: float | None = None):
        self.layers = model.get_model().layers
        if not 1 <= layer <= len(self.layers):
            raise ValueError(f"fastv layer must be in [1, {len(self.layers)}], got {layer}")
        self.model, self.spans, self.layer = model, spans, layer
        self.attention_mask = attention_mask.bool()
        flat = [s for row in spans for s in row]
        self.budgets = [fastv_budget(e - s, k, ratio) for (s, e), k in zip(flat, budgets)]
        self.blocked: torch.Tensor | None = None  # [B, T_prefill] keys hidden from layers >= L
        self.kept: list[torch.Tensor] = []
        self._cap: dict = {}

    # ---- scoring at layer L-1 ----
    def _capture(self, name):
        def hook(_m, _i, out):
            self._cap[name] = out
        return hook

    def _grab_rope(self, _m, _args, kwargs):
        self._cap["rope"] = kwargs.get("position_embeddings")

    def _score_and_block(self, _m, _i, _o):
        q, k = self._cap.pop("q"), self._cap.pop("k")
        if q.shape[1] == 1 or self.blocked is not None:  # decode steps: nothing to score
            return
        cos, sin = self._cap.pop("rope")
        attn = self.layers[self.layer - 1].self_attn
        mask = self.attention_mask.to(q.device)
        last = mask.shape[1] - 1 - mask.flip(-1).int().argmax(-1)  # last real token per row
        scores = last_token_attention(q, k, cos, sin, mask, last, attn.num_key_value_groups, attn.scaling)
        self.scores = scores  # [B, T], kept for inspection and tests
        blocked = torch.zeros_like(mask)
        budgets = iter(self.budgets)
        for b, row in enumerate(self.spans):
            for start, end in row:
                keep = fastv(VisionSignals(features=scores[b:b + 1, start:end, None], scores=scores[b:b + 1, start:end]),
                             next(budgets)).indices[0]
                drop = torch.ones(end - start, dtype=torch.bool, device=mask.device)
                drop[keep] = False
                blocked[b, start:end] = drop
                self.kept.append(keep)
        self.blocked = blocked

    # ---- blocking in layers >= L ----
    def _block(self, _m, args, kwargs):
        if self.blocked is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        mask = kwargs.get("attention_mask")
        b, q_len = hidden.shape[:2]
        t0 = self.blocked.shape[1]
        if mask is None:  # SDPA's causal-only fast path: build the causal part explicitly
            cache = kwargs.get("past_key_values")
            # Layer 0 has already stored this step's keys, so its length is this layer's key length.
            kv_len = cache.get_seq_length() if q_len == 1 and cache is not None else q_len
            mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=hidden.device).tril(kv_len - q_len)
            mask = mask[None, None].expand(b, 1, q_len, kv_len)
        kv_len = mask.shape[-1]
        extra = torch.zeros(b, kv_len - t0, dtype=torch.bool, device=hidden.device)
        block = torch.cat([self.blocked.to(hidden.device), extra], dim=1)[:, None, None, :]  # [B, 1, 1, KV]
        if mask.dtype == torch.bool:
            mask = mask & ~block
        else:
            mask = mask.masked_fill(block, torch.finfo(mask.dtype).min)
        kwargs["attention_mask"] = mask
        return args, kwargs

    def report(self) -> dict:
        """K after layer L and the layer-averaged visual-token count, per image."""
        total = len(self.layers)
        counts = [len(k) for k in self.kept]
        sizes = [e - s for row in self.spans for s, e in row]
        return {
            "layer": self.layer,
            "kept_after_layer": counts,
            "layer_averaged": [layer_averaged_tokens(n, k, self.layer, total) for n, k in zip(sizes, counts)],
        }

    @contextmanager
    def installed(self) -> Iterator["FastVPruner"]:
        layer = self.layers[self.layer - 1]
        handles = [
            layer.self_attn.q_proj.register_forward_hook(self._capture("q")),
            layer.self_attn.k_proj.register_forward_hook(self._capture("k")),
            layer.self_attn.register_forward_pre_hook(self._grab_rope, with_kwargs=True),
            layer.register_forward_hook(self._score_and_block),
        ]
        handles += [lay.register_forward_pre_hook(self._block, with_kwargs=True) for lay in self.layers[self.layer:]]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()


@register_method("fastv", stage="in_llm", defaults={"layer": 2, "ratio": None}, llm_pruner=FastVPruner)
def fastv(signals: VisionSignals, k: int, layer: int = 2, ratio: float | None = None) -> Selection:
    """Keep the top-K image tokens by the last prompt token's attention at LLM layer L-1.

    Inside the LLM the scores arrive as `signals.scores` [B, N]. `ratio` (FastV's R, the pruned share)
    overrides K: K = round(N * (1 - R)).
    """
    if signals.scores is None:
        raise ValueError("fastv scores image tokens inside the LLM; it has no pre-LLM signal to use")
    return Selection(indices=topk_raster(signals.scores, k))
