"""`llava.compat` against both spellings of transformers' internal names that exist today."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaModel

from llava import compat


def renamed(fn):
    """A decorator that wraps like transformers' deprecate_kwarg (functools.wraps keeps __wrapped__)."""

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        return fn(*args, **kwargs)

    return inner


class NewLayer(nn.Module):
    """A decoder layer with the 5.24+ spelling."""

    @renamed
    def forward(self, hidden, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                position_embeddings=None):
        self.seen = dict(cache=cache, use_cache=use_cache, mask=attention_mask)
        return hidden + 1


class OldLayer(nn.Module):
    """A decoder layer with the spelling before 5.24, returning a tuple as releases before 5.0 did."""

    def forward(self, hidden, attention_mask=None, position_ids=None, past_key_values=None, use_cache=False,
                position_embeddings=None, **kwargs):
        self.seen = dict(cache=past_key_values, use_cache=use_cache, extra=kwargs)
        return (hidden + 2,)


class NoCacheLayer(nn.Module):
    def forward(self, hidden):
        return hidden


def test_the_installed_llama_layer_is_known():
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
                         vocab_size=8)
    assert compat.cache_kwarg(LlamaDecoderLayer(config, 0)) in compat.CACHE_KWARGS
    assert compat.cache_kwarg(LlamaModel(config)) == compat.cache_kwarg(LlamaDecoderLayer(config, 0))


@pytest.mark.parametrize("layer, name, added", [(NewLayer(), "cache", 1), (OldLayer(), "past_key_values", 2)])
def test_both_spellings_receive_the_cache(layer, name, added):
    assert compat.cache_kwarg(layer) == name
    cache = object()
    hidden = torch.zeros(1, 2, 3)
    out = compat.call_decoder_layer(layer, hidden, attention_mask=None, position_ids=torch.zeros(1, 2),
                                    position_embeddings=(hidden, hidden), cache=cache)
    assert torch.equal(out, hidden + added)
    assert layer.seen["cache"] is cache and layer.seen["use_cache"] is True
    if isinstance(layer, OldLayer):
        assert layer.seen["extra"] == {}  # nothing landed under an unknown name


def test_unknown_spelling_is_a_clear_error():
    with pytest.raises(TypeError, match=r"takes none of \('cache', 'past_key_values'\)"):
        compat.cache_kwarg(NoCacheLayer())


def test_output_cache_reads_either_attribute():
    cache = object()
    assert compat.output_cache(SimpleNamespace(cache=cache)) is cache
    assert compat.output_cache(SimpleNamespace(past_key_values=cache)) is cache
    assert compat.output_cache(SimpleNamespace(cache=None, past_key_values=cache)) is cache
    assert compat.output_cache(SimpleNamespace()) is None


def test_new_cache_stores_per_layer_lengths():
    config = LlamaConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2,
                         vocab_size=8)
    cache = compat.new_cache(config)
    cache.update(torch.zeros(1, 2, 5, 8), torch.zeros(1, 2, 5, 8), 0)
    cache.update(torch.zeros(1, 2, 3, 8), torch.zeros(1, 2, 3, 8), 1)
    assert [compat.cache_length(cache, i) for i in range(2)] == [5, 3]
    assert sorted(t.shape[2] for t in compat.cache_tensors(cache)) == [3, 3, 5, 5]  # keys and values


def test_layer_masks_per_implementation():
    allowed = torch.tensor([[[[True, False], [True, True]]]])
    assert compat.layer_attention_mask(allowed, "sdpa", torch.float32) is allowed
    eager = compat.layer_attention_mask(allowed, "eager", torch.float16)
    assert eager.dtype == torch.float16 and eager[0, 0, 0, 1] == torch.finfo(torch.float16).min
    assert eager[0, 0, 1].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'"):
        compat.layer_attention_mask(allowed, "flash_attention_2", torch.float16)


def test_decoder_parts_refuses_other_modules():
    with pytest.raises(TypeError, match="not a decoder-only transformers model"):
        compat.decoder_parts(nn.Linear(2, 2))


def test_batch_prefix_cache_picks_rows_and_cuts_length():
    config = LlamaConfig(hidden_size=16, num_attention_heads=2, num_key_value_heads=2, num_hidden_layers=2,
                         intermediate_size=32, vocab_size=50)
    model = LlamaModel(config).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    singles = [compat.output_cache(model(input_ids=ids[b:b + 1], use_cache=True)) for b in range(2)]
    batched = compat.output_cache(model(input_ids=ids, use_cache=True))
    out = compat.batch_prefix_cache(config, singles, [1, 0, 1], 3)
    assert compat.cache_length(out, 0) == 3 and compat.cache_length(out, 1) == 3
    got, want = compat.cache_tensors(out), compat.cache_tensors(batched)
    for g, w in zip(got, want, strict=True):  # [3, h, 3, d] rows 1, 0, 1 of the batched [2, h, 5, d]
        torch.testing.assert_close(g, w[[1, 0, 1], :, :3])
    assert compat.cache_length(singles[0], 0) == 5  # the sources are left as they were
