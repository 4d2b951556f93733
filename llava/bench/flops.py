"""Analytic FLOPs of each LLaVA stage, under one stated convention.

Convention:
- FLOPs = 2 x multiply-accumulates (MACs), and only matrix products are counted. Biases, norms,
  activations, softmax, rotary embeddings, residual adds, sorting and gathers count 0.
- A linear layer on M rows, d_in -> d_out: 2 * M * d_in * d_out.
- Attention: QK^T and AV each 2 * B * H * Lq * Lk * Dh, with Lk the full key length (no causal
  halving). Prefill uses Lq = Lk = the padded prompt length (what SDPA computes with a padding
  mask, and what FlopCounterMode counts); a decode step uses Lq = 1 and Lk = the cache length.
- LLaMA layer: q, k, v, o projections (k and v at num_key_value_heads * Dh) and the gated FFN as
  3 matmuls (gate, up, down). LM head only where logits are computed: the last position of each
  row at prefill (logits_to_keep=1) and every decode step. Embedding lookups count 0.
- CLIP tower: the patch-embedding conv (2 * N * 3p^2 * D) and, per encoder layer, q, k, v, o,
  fc1, fc2 over T = N + 1 tokens plus the full T x T attention. Layers run: up to the selected
  layer (ours: 23 of 24 at mm_vision_select_layer = -2); the original runs all 24.
- [CLS] scoring: the [CLS] query row against all keys, 2 * B * T * D per scored layer (softmax and
  head mean count 0). The original gets its scores from the eager attention maps at no extra FLOPs.
- Projector (e.g. mlp2x_gelu): every linear on the projected tokens, K per image for ours, all N
  for the original (which projects everything, then gathers).
- Selection and the splice: 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

CONVENTION = (
    "FLOPs = 2 x MACs of matrix products only (norms, activations, softmax, rotary, sort/gather count 0). "
    "LLaMA layer: q,k,v,o + gated FFN as 3 matmuls; attention QK^T and AV over the full (non-causal) "
    "padded length at prefill (Lq = Lk = L), Lq = 1 and Lk = cache length per decode step; LM head on the "
    "last position at prefill and on every decode step. CLIP: patch conv + per layer q,k,v,o, fc1, fc2 and "
    "full T x T attention (T = 577), up to the selected layer (23 of 24) for ours, all 24 for the original. "
    "[CLS] scoring: 2*B*T*D per scored layer. Projector on the K kept tokens (ours) or all 576 (original)."
)


@dataclass(frozen=True)
class ModelDims:
    """The shapes that set the FLOPs of one LLaVA model (read from a built model by `from_model`)."""

    # vision tower
    v_hidden: int
    v_intermediate: int
    v_heads: int
    v_layers: int  # layers in the checkpoint
    v_layers_run: int  # layers our tower runs (to the selected layer)
    image_size: int
    patch_size: int
    # projector: (d_in, d_out) of each linear, in order
    projector: tuple[tuple[int, int], ...]
    # language model
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    layers: int
    vocab: int

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @classmethod
    def from_model(cls, model) -> "ModelDims":
        tower = model.get_vision_tower()
        vc, tc = tower.config, model.config
        linears = tuple((m.in_features, m.out_features) for m in model.mm_projector.modules()
                        if isinstance(m, nn.Linear))
        heads = tc.num_attention_heads
        return cls(
            v_hidden=vc.hidden_size, v_intermediate=vc.intermediate_size, v_heads=vc.num_attention_heads,
            v_layers=vc.num_hidden_layers, v_layers_run=tower.num_run_layers,
            image_size=vc.image_size, patch_size=vc.patch_size, projector=linears,
            hidden=tc.hidden_size, intermediate=tc.intermediate_size, heads=heads,
            kv_heads=getattr(tc, "num_key_value_heads", None) or heads,
            head_dim=getattr(tc, "head_dim", None) or tc.hidden_size // heads,
            layers=len(model.get_model().layers), vocab=model.lm_head.out_features,
        )

    def to_dict(self) -> dict:
        return asdict(self)


def vision_flops(d: ModelDims, images: int, layers: int | None = None) -> int:
    """CLIP tower on `images` images, through `layers` encoder layers (default: ours, to the selected layer)."""
    layers = d.v_layers_run if layers is None else layers
    n, t, dv = d.num_patches, d.num_patches + 1, d.v_hidden
    conv = n * 3 * d.patch_size**2 * dv
    per_layer = t * (4 * dv * dv + 2 * dv * d.v_intermediate) + 2 * t * t * dv
    return 2 * images * (conv + layers * per_layer)


def vision_attention_flops(d: ModelDims, images: int, layers: int | None = None) -> int:
    """The QK^T and AV part of `vision_flops` (what SDPA kernels compute)."""
    layers = d.v_layers_run if layers is None else layers
    t = d.num_patches + 1
    return 2 * images * layers * 2 * t * t * d.v_hidden


def scoring_flops(d: ModelDims, images: int, needs) -> int:
    """The [CLS]-row signals a method asks for: one layer for cls_attn, every run layer for cls_attn_layers."""
    rows = (1 if "cls_attn" in needs else 0) + (d.v_layers_run if "cls_attn_layers" in needs else 0)
    return 2 * images * rows * (d.num_patches + 1) * d.v_hidden


def projector_flops(d: ModelDims, tokens: int) -> int:
    """The projector on `tokens` tokens in total (over all images)."""
    return 2 * tokens * sum(i * o for i, o in d.projector)


def _llm_linear_macs_per_token(d: ModelDims) -> int:
    q_o = 2 * d.hidden * d.heads * d.head_dim
    k_v = 2 * d.hidden * d.kv_heads * d.head_dim
    return q_o + k_v + 3 * d.hidden * d.intermediate


def prefill_flops(d: ModelDims, batch: int, length: int, logits_rows: int = 1) -> int:
    """LLM prefill of `batch` rows padded to `length`; LM head on `logits_rows` positions per row."""
    linear = batch * length * _llm_linear_macs_per_token(d)
    attention = 2 * batch * d.heads * length * length * d.head_dim
    return 2 * (d.layers * (linear + attention) + batch * logits_rows * d.hidden * d.vocab)


def prefill_attention_flops(d: ModelDims, batch: int, length: int) -> int:
    """The QK^T and AV part of `prefill_flops`."""
    return 2 * d.layers * 2 * batch * d.heads * length * length * d.head_dim


def decode_step_flops(d: ModelDims, batch: int, cache_length: int) -> int:
    """One decode step: one new token per row attending to `cache_length` keys (itself included)."""
    linear = batch * _llm_linear_macs_per_token(d)
    attention = 2 * batch * d.heads * cache_length * d.head_dim
    return 2 * (d.layers * (linear + attention) + batch * d.hidden * d.vocab)


def decode_flops(d: ModelDims, batch: int, length: int, new_tokens: int) -> int:
    """All decode steps after a prefill of `length`: the first new token comes from the prefill."""
    return sum(decode_step_flops(d, batch, length + step) for step in range(1, new_tokens))


def pipeline_flops(
    d: ModelDims,
    batch: int,
    kept: int,
    length: int,
    new_tokens: int,
    needs=frozenset(),
    original: bool = False,
) -> dict[str, int]:
    """FLOPs per stage for one pass: `batch` images/rows, `kept` visual tokens per image (K, or N when
    not pruned), padded prompt `length` after the splice, `new_tokens` generated tokens.

    original=True: the original FasterVLM path (all CLIP layers, scores from the eager maps, the
    projector on all N tokens). Also returns 'ttft' (everything up to the first token) and 'e2e'.
    """
    n = d.num_patches
    out = {
        "vision": vision_flops(d, batch, d.v_layers if original else None),
        "scoring": 0 if original else scoring_flops(d, batch, needs),
        "select": 0,
        "projector": projector_flops(d, batch * (n if original else kept)),
        "splice": 0,
        "prefill": prefill_flops(d, batch, length),
        "decode": decode_flops(d, batch, length, new_tokens),
    }
    out["ttft"] = sum(out[s] for s in ("vision", "scoring", "select", "projector", "splice", "prefill"))
    out["e2e"] = out["ttft"] + out["decode"]
    return out


def kv_cache_bytes(d: ModelDims, batch: int, length: int, element_size: int) -> int:
    """Keys and values of every layer for `batch` rows of `length` positions."""
    return 2 * d.layers * batch * d.kv_heads * length * d.head_dim * element_size


# ---- in-LLM pruning: every layer at its own length ------------------------------------------------
def _layers_of(d: ModelDims, lengths) -> list[int]:
    lengths = [lengths] * d.layers if isinstance(lengths, int) else [int(x) for x in lengths]
    if len(lengths) != d.layers:
        raise ValueError(f"need one length per LLM layer ({d.layers}), got {len(lengths)}")
    return lengths


def prefill_flops_layers(d: ModelDims, batch: int, lengths, logits_rows: int = 1) -> int:
    """LLM prefill where layer i runs on `lengths[i]` padded positions (an in-LLM method's drops;
    an int: every layer the same, which equals `prefill_flops`)."""
    lengths = _layers_of(d, lengths)
    per_token = _llm_linear_macs_per_token(d)
    macs = sum(batch * n * per_token + 2 * batch * d.heads * n * n * d.head_dim for n in lengths)
    return 2 * (macs + batch * logits_rows * d.hidden * d.vocab)


def decode_flops_layers(d: ModelDims, batch: int, lengths, new_tokens: int) -> int:
    """All decode steps after a prefill whose layer i cached `lengths[i]` keys."""
    lengths = _layers_of(d, lengths)
    linear = batch * _llm_linear_macs_per_token(d)
    total = 0
    for step in range(1, new_tokens):
        attention = sum(2 * batch * d.heads * (n + step) * d.head_dim for n in lengths)
        total += 2 * (d.layers * linear + attention + batch * d.hidden * d.vocab)
    return total


def in_llm_scoring_flops(d: ModelDims, batch: int, lengths, probe_layers, drop_layers, q_rows) -> int:
    """What an in-LLM method's scoring adds to the prefill, under the module's convention.

    Per probed layer: the probe's query rows against that layer's keys, 2 * B * H * R * L * Dh
    (QK^T only; softmax and head mean count 0), R = the rows `q_rows` keeps (a slice of the L
    positions, None: all). A probed layer that is also a drop layer is scored on the tokens entering
    it, before its drop (PyramidDrop), which costs its q and k projections once more on those
    tokens. Selection arithmetic beyond that (sorting, DART's cosine similarities) counts 0.
    """
    lengths = _layers_of(d, lengths)
    total = 0
    for p in probe_layers:
        ahead = p in drop_layers
        n = lengths[p - 1] if ahead and p > 0 else lengths[p]
        rows = n if q_rows is None else len(range(n)[q_rows])
        total += 2 * batch * d.heads * rows * n * d.head_dim
        if ahead:
            total += 2 * batch * n * d.hidden * (d.heads + d.kv_heads) * d.head_dim
    return total


def kv_cache_bytes_layers(d: ModelDims, batch: int, lengths, element_size: int) -> int:
    """Keys and values of every layer, layer i holding `lengths[i]` positions."""
    return sum(2 * batch * d.kv_heads * n * d.head_dim * element_size for n in _layers_of(d, lengths))
