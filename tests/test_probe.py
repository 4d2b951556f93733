"""The attention probe against transformers' eager attention weights and rotary embeddings."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from llava.probe import (
    HeadGeometry,
    QKProbe,
    attention_rows,
    head_mean_rows,
    multi_axis_rope,
    received_attention,
    rope_tables,
)


@pytest.fixture(scope="module")
def gqa_llama():
    """A 2-layer LLaMA with grouped-query attention (4 query heads, 2 key heads), eager attention."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).eval()
    ids = torch.randint(3, 64, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :3] = 0  # left padding in row 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return model, ids, mask, positions


def _captured(model, ids, mask, positions, layer, q_rows=None):
    attn = model.model.layers[layer].self_attn
    probe = QKProbe({layer: attn}, q_rows=q_rows)
    with probe.attached():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, output_attentions=True)
    return probe.captured[layer], out.attentions[layer], HeadGeometry.of(attn)


def test_geometry_reads_gqa_heads(gqa_llama):
    geometry = HeadGeometry.of(gqa_llama[0].model.layers[0].self_attn)
    assert geometry == HeadGeometry(num_heads=4, num_kv_heads=2, head_dim=8, scale=8**-0.5)


@pytest.mark.parametrize("layer", [0, 1])
def test_rows_with_rope_gqa_padding_and_causality_equal_eager(gqa_llama, layer):
    model, ids, mask, positions = gqa_llama
    cap, eager, geometry = _captured(model, ids, mask, positions, layer)
    rope = rope_tables(model.model.rotary_emb, positions)
    rows = torch.tensor([3, 5, 8])
    ours = attention_rows(cap.q[:, rows], cap.k, geometry, q_positions=rows, rope=rope,
                          key_mask=mask.bool(), causal=True)  # [B, H, R, T]
    torch.testing.assert_close(ours, eager[:, :, rows], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(head_mean_rows(cap.q[:, rows], cap.k, geometry, q_positions=rows, rope=rope,
                                              key_mask=mask.bool(), causal=True), eager[:, :, rows].mean(1))


def test_kept_rows_only_and_last_row(gqa_llama):
    model, ids, mask, positions = gqa_llama
    cap, eager, geometry = _captured(model, ids, mask, positions, 1, q_rows=slice(-1, None))
    assert cap.q.shape == (2, 1, 32)  # only the last query row is kept
    rope = rope_tables(model.model.rotary_emb, positions)
    last = torch.tensor([8])
    ours = head_mean_rows(cap.q, cap.k, geometry, q_positions=last, rope=rope, key_mask=mask.bool(), causal=True)
    torch.testing.assert_close(ours[:, 0], eager[:, :, -1].mean(1), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("chunk", [2, 4, 100])
def test_received_attention_in_chunks_equals_the_full_map(gqa_llama, chunk):
    model, ids, mask, positions = gqa_llama
    cap, eager, geometry = _captured(model, ids, mask, positions, 0)
    rope = rope_tables(model.model.rotary_emb, positions)
    valid = mask.bool()
    ours = received_attention(cap.q, cap.k, geometry, query_mask=valid, chunk=chunk, rope=rope,
                              key_mask=valid, causal=True)
    full = eager.mean(dim=1)  # [B, T, T]
    ref = torch.stack([full[b][valid[b]].mean(dim=0) for b in range(2)])  # mean over real queries
    torch.testing.assert_close(ours[valid], ref[valid], atol=1e-6, rtol=1e-5)


def test_streaming_callback_drops_layers_after_use(gqa_llama):
    model, ids, mask, positions = gqa_llama
    seen = {}
    attn = {i: layer.self_attn for i, layer in enumerate(model.model.layers)}
    probe = QKProbe(attn, q_rows=slice(0, 1), on_layer=lambda i, cap: seen.setdefault(i, cap.q.shape), keep=False)
    with probe.attached():
        model(input_ids=ids, attention_mask=mask)
    assert seen == {0: (2, 1, 32), 1: (2, 1, 32)} and probe.captured == {}
    model(input_ids=ids, attention_mask=mask)  # hooks are gone after the block
    assert probe.captured == {}


class FusedAttention(nn.Module):
    """A ViT block's attention with one fused qkv projection (as Qwen's vision towers have)."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.num_heads, self.head_dim = heads, dim // heads

    def forward(self, x):
        return self.qkv(x)


def test_fused_qkv_is_split_into_q_and_k():
    torch.manual_seed(0)
    attn = FusedAttention()
    x = torch.randn(3, 5, 16)
    probe = QKProbe({0: attn})
    with probe.attached():
        attn(x)
    q, k, _ = attn.qkv(x).reshape(3, 5, 3, 16).unbind(2)
    torch.testing.assert_close(probe.captured[0].q, q)
    torch.testing.assert_close(probe.captured[0].k, k)
    geometry = HeadGeometry.of(attn)
    probs = attention_rows(probe.captured[0].q, probe.captured[0].k, geometry)  # no RoPE, no mask
    qh, kh = q.view(3, 5, 2, 8).transpose(1, 2), k.view(3, 5, 2, 8).transpose(1, 2)
    torch.testing.assert_close(probs, (qh @ kh.transpose(-1, -2) * 8**-0.5).softmax(-1))


class _TupleLinear(nn.Linear):
    """A linear that returns (output, bias), as vLLM's parallel linears do."""

    def forward(self, x):
        return super().forward(x), None


class ServingAttention(nn.Module):
    """vLLM's CLIP attention shape: a fused `qkv_proj` whose forward returns a tuple."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.qkv_proj = _TupleLinear(dim, 3 * dim)
        self.num_heads, self.head_dim = heads, dim // heads

    def forward(self, x):
        return self.qkv_proj(x)[0]


def test_fused_qkv_proj_returning_a_tuple_is_captured():
    torch.manual_seed(0)
    attn = ServingAttention()
    x = torch.randn(2, 5, 16)
    probe = QKProbe({0: attn}, q_rows=slice(0, 1))
    with probe.attached():
        out = attn(x)
    q, k, _ = out.chunk(3, dim=-1)
    torch.testing.assert_close(probe.captured[0].q, q[:, :1])
    torch.testing.assert_close(probe.captured[0].k, k)


def _axis_tables(inv_freq: torch.Tensor, positions: torch.Tensor):
    freqs = positions[..., None].float() * inv_freq  # [A, B, T, Dh/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl"])
def test_multi_axis_rope_equals_the_qwen_rotary_embedding(family):
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLTextConfig as Config
        from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding as Rotary
        sections, interleaved = [2, 3, 3], False
    else:
        from transformers import Qwen3VLTextConfig as Config
        from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding as Rotary
        sections, interleaved = [4, 2, 2], True
    config = Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections})
    rotary = Rotary(config)
    positions = torch.stack([torch.arange(6).repeat(2, 1), torch.arange(6).flip(0).repeat(2, 1),
                             (torch.arange(6) % 3).repeat(2, 1)])  # [3, B, T]: t, h, w differ
    ref_cos, ref_sin = rotary(torch.empty(0), positions)
    cos, sin = multi_axis_rope(*_axis_tables(rotary.inv_freq, positions), sections, interleaved=interleaved)
    torch.testing.assert_close(cos, ref_cos)
    torch.testing.assert_close(sin, ref_sin)


def test_errors_name_what_is_missing(gqa_llama):
    model, ids, mask, positions = gqa_llama
    cap, _, geometry = _captured(model, ids, mask, positions, 0)
    with pytest.raises(ValueError, match="need q_positions"):
        attention_rows(cap.q, cap.k, geometry, causal=True)
    with pytest.raises(ValueError, match=r"sections \[1, 1\] do not cover head width 8"):
        multi_axis_rope(torch.zeros(2, 1, 3, 8), torch.zeros(2, 1, 3, 8), [1, 1])
    with pytest.raises(TypeError, match="neither q_proj/k_proj nor a fused qkv"):
        with QKProbe({0: nn.Linear(2, 2)}).attached():
            pass
