"""DART through the LLM loop, against a reference written from the official rule
(ZichenWen1/DART, llava/model/language_model/modeling_llama_self.py, `get_retained_image_token`):
the stock model's own hidden states and keys (transformers' RoPE), the pivot/duplication loop over
Python sets as the official code runs it, then explicit removal; key blocking in transformers' own
generate for the greedy answers; the cache shrinking; counts, determinism and batch = singles."""

from __future__ import annotations

import math

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from llava.mm_utils import process_images
from llava.pruning import PruningConfig
from llava.pruning.dart import DARTDropper, dart_topk
from llava.pruning.fastv import layer_averaged_tokens

from in_llm_helpers import answer_metadata, greedy_with_hooks, hide_keys, left_padded, loop_greedy

LAYER = 2
QUESTIONS = ("What shapes are there?", "Describe the picture in detail please.", "Is it red?")


@torch.no_grad()
def official_kept(model, embeds: torch.Tensor, span: tuple[int, int], budget: int, pivots=4, text_pivots=4,
                  layer=LAYER) -> list[int]:
    """The official rule on one unpadded row (batch 1, as the official code requires).

    Keys: layer L-1's k_proj on its normed input, RoPE by transformers, heads side by side; hidden:
    the output of layer L-1 through the final norm. -> kept sequence positions of image tokens, sorted.
    """
    lm = model.get_model()
    out = lm(inputs_embeds=embeds, output_hidden_states=True)
    before, after = out.hidden_states[layer - 1], out.hidden_states[layer]  # input / output of layer L-1
    attn = lm.layers[layer - 1].self_attn
    t = embeds.shape[1]
    k = attn.k_proj(lm.layers[layer - 1].input_layernorm(before)).view(1, t, -1, attn.head_dim).transpose(1, 2)
    cos, sin = lm.rotary_emb(k, torch.arange(t)[None])
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    keys = k.transpose(1, 2).reshape(t, -1)  # [T, H*Dh]
    state = lm.norm(after)[0]  # [T, D]
    start, end = span
    n = end - start
    topk = math.ceil(budget // (pivots + text_pivots))
    image_l1 = keys[start:end].abs().sum(-1)
    text_l1 = keys[end:].abs().sum(-1)
    image_idx = (image_l1.topk(pivots).indices + start).tolist()
    query_idx = (text_l1.topk(text_pivots).indices + end).tolist()
    chosen = set(image_idx + query_idx)
    free = set(range(start, start + n)) - set(image_idx)
    free_list = list(free)
    for item in list(chosen):
        sim = -torch.nn.functional.cosine_similarity(state[item, :], state[free_list, :], dim=-1)
        real = [free_list[i] for i in sim.topk(topk).indices]
        chosen.update(real)
        free.difference_update(real)
        free_list = list(free)
    chosen.difference_update(query_idx)
    return sorted(chosen)


def test_kept_set_logits_and_cache_equal_the_explicit_reference(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, _ = left_padded(tokenizer, QUESTIONS[1:2])
    pixels = process_images(sample_images[1:2], processor, model.config)
    mm = model.prepare_multimodal_inputs(ids, pixels, padding_side="left", pruning=PruningConfig())
    (start, end), = mm.image_spans[0]
    n_layers = model.config.num_hidden_layers
    dropper = DARTDropper(mm.image_spans, [128], n_layers, layer=LAYER)
    loop, ours, tokens = loop_greedy(model, mm, dropper, 3)

    kept = official_kept(model, mm.inputs_embeds, (start, end), 128)
    assert len(kept) == 4 + 8 * 16 == 132
    assert (start + dropper.kept[0]).tolist() == kept

    # explicit removal with the stock layers: prefill + the generated tokens, positions kept
    lm = model.get_model()
    t = mm.inputs_embeds.shape[1]
    hidden = torch.cat([mm.inputs_embeds, lm.embed_tokens(torch.stack(tokens, 1))], dim=1)
    pos = torch.arange(hidden.shape[1])[None]

    def run(layers, h, p):
        causal = torch.ones(h.shape[1], h.shape[1], dtype=torch.bool).tril()[None, None]
        for layer in layers:
            h = layer(h, attention_mask=causal, position_embeddings=lm.rotary_emb(h, p), position_ids=p)
        return h

    with torch.no_grad():
        hidden = run(lm.layers[:LAYER], hidden, pos)
        keep = torch.cat([torch.arange(start), torch.tensor(kept), torch.arange(end, hidden.shape[1])])
        reduced = run(lm.layers[LAYER:], hidden[:, keep], pos[:, keep])
        ref = model.lm_head(lm.norm(reduced))[0, -4:]
    # cached decode steps vs one full causal pass: fp32 round-off on logits of magnitude ~10
    torch.testing.assert_close(torch.cat(ours), ref, atol=5e-5, rtol=1e-5)
    text = t - 576
    assert loop.kv_lengths() == [t + 3] * LAYER + [text + 132 + 3] * (n_layers - LAYER)


class KeyBlocking:
    """Pruned image tokens hidden as keys from layer L on in transformers' own generate (eager)."""

    def __init__(self, model, blocked: torch.Tensor, layer: int = LAYER):
        self.layers, self.blocked, self.layer = model.get_model().layers, blocked, layer  # blocked: [B, T]

    def _block(self, _module, args, kwargs):
        mask = kwargs["attention_mask"]  # eager: additive float [B, 1, Q, KV]
        kwargs["attention_mask"] = hide_keys(mask, self.blocked)
        return args, kwargs

    def generate(self, model, mm, max_new_tokens: int) -> torch.Tensor:
        return greedy_with_hooks(model, mm, [(lay, "pre", self._block) for lay in self.layers[self.layer:]],
                                 max_new_tokens)


@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_answers_equal_key_blocking_and_batch_equals_singles(tiny, tiny_path, sample_images, batch):
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS[:batch])
    pixels = process_images([sample_images[i % 3] for i in range(batch)], processor, model.config)
    dart = PruningConfig("dart", 128)
    ours = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
                          pruning=dart)
    assert model.last_multimodal.in_llm["kept_after_layer"] == [132] * batch
    kept = [k.tolist() for k in model.last_multimodal.kept_indices]

    eager = load_pretrained_model(tiny_path, device="cpu", attn_implementation="eager")[1]
    mm = eager.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=PruningConfig())
    blocked = torch.zeros(mm.attention_mask.shape, dtype=torch.bool)
    for b, ((start, end),) in enumerate(mm.image_spans):
        row = mm.attention_mask[b].bool()
        pad = int((~row).sum())
        official = official_kept(eager, mm.inputs_embeds[b:b + 1, row], (start - pad, end - pad), 128)
        assert [start - pad + i for i in kept[b]] == official, f"row {b}"
        blocked[b, start:end] = True
        blocked[b, [pad + i for i in official]] = False
    ref = KeyBlocking(eager, blocked).generate(eager, mm, 10)
    assert ours.tolist() == ref.tolist()
    for b in range(batch):  # batch = one by one, and the same again (deterministic)
        single = model.generate(ids[b][mask[b].bool()][None], images=pixels[b:b + 1], max_new_tokens=10,
                                do_sample=False, pad_token_id=0, pruning=dart)
        assert single[0].tolist() == ours[b][:single.shape[1]].tolist()
        assert model.last_multimodal.kept_indices[0].tolist() == kept[b]


def test_budget_covering_the_image_prunes_nothing_and_accounting(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS[:2])
    pixels = process_images(sample_images[:2], processor, model.config)
    full = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=6, do_sample=False,
                          pruning=PruningConfig())
    same = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=6, do_sample=False,
                          pruning=PruningConfig("dart", 576))
    assert same.tolist() == full.tolist()
    assert model.last_multimodal.in_llm["kept_after_layer"] == [576, 576]
    model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=2, do_sample=False,
                   pruning=PruningConfig("dart", 64, method_args={"pivots": 2, "layer": 1}))
    n_layers = model.config.num_hidden_layers
    # 2 image pivots + (2 + 2) pivots x 16 each
    assert model.last_multimodal.in_llm == {"layer": 1, "kept_after_layer": [66, 66],
                                            "layer_averaged": [layer_averaged_tokens(576, 66, 1, n_layers)] * 2}
    assert dart_topk(576, 128, 4, 4) == 16 and dart_topk(576, 1000, 4, 4) == 71
    with pytest.raises(ValueError, match=r"dart layer must be in \[1, 3\] for a 4-layer LLM, got 4"):
        DARTDropper([[(0, 576)]], [128], 4, layer=4)


def test_dart_through_model_vqa_loader(tiny_path, tmp_path):
    meta = answer_metadata(tiny_path, tmp_path, "dart", 128, "layer=2,pivots=4")
    assert meta["pruning_method"] == "dart" and meta["visual_tokens"] == 576
    assert meta["visual_tokens_after_layer"] == 132 and meta["prune_layer"] == 2
    assert meta["layer_averaged_visual_tokens"] == pytest.approx((2 * 576 + 2 * 132) / 4)
