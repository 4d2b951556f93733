"""FastV through the LLM loop: scores equal eager attention, outputs equal explicit removal and FastV's
own key-blocking formulation, the KV cache really shrinks, and the accounting is reported."""

from __future__ import annotations


import pytest
import torch

from llava import compat
from llava.mm_utils import process_images
from llava.model.llm_loop import LLMLoop
from llava.pruning import PruningConfig
from llava.pruning.fastv import FastVDropper, fastv_budget, layer_averaged_tokens

from in_llm_helpers import answer_metadata, greedy_with_hooks, hide_keys, left_padded

LAYER = 2
QUESTIONS = ("What shapes are there?", "Describe the picture in detail please.", "Is it red?",
             "How many stripes can you count in this image?")


@pytest.fixture(scope="module")
def inputs(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS[:2])
    return ids, mask, process_images(sample_images[:2], processor, model.config)


def test_scores_and_kept_tokens_equal_eager_attention(tiny, inputs, eager):
    model = tiny[1]
    ids, mask, pixels = inputs
    mm = model.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=PruningConfig())
    dropper = FastVDropper(mm.image_spans, [58, 58], model.config.num_hidden_layers, layer=LAYER)
    LLMLoop(model.get_model(), model.lm_head, dropper).prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)

    out = eager(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask, position_ids=mm.position_ids,
                output_attentions=True)
    ref = out.attentions[LAYER - 1][:, :, -1].mean(dim=1)  # last prompt token's row, head mean: [B, T]
    valid = mm.attention_mask.bool()
    torch.testing.assert_close(dropper.scores[valid], ref[valid], atol=1e-6, rtol=1e-5)
    for b, ((start, end),) in enumerate(mm.image_spans):
        expected = torch.topk(ref[b, start:end], 58).indices.sort().values
        assert dropper.kept[b].tolist() == expected.tolist()


def test_unpruned_loop_equals_the_stock_model(tiny, inputs):
    """No dropper: the loop's prefill and decode logits equal transformers' own forward with its cache."""
    model = tiny[1]
    ids, mask, pixels = inputs
    mm = model.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=PruningConfig())
    loop = LLMLoop(model.get_model(), model.lm_head)
    ours = [loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)]
    out = model(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask, position_ids=mm.position_ids,
                use_cache=True)
    ref, cache = [out.logits[:, -1]], compat.output_cache(out)
    attn, pos = mm.attention_mask, mm.position_ids[:, -1:]
    for _ in range(3):
        token = ref[-1].argmax(-1)
        ours.append(loop.step(model.get_model().embed_tokens(token)[:, None]))
        attn, pos = torch.cat([attn, torch.ones_like(attn[:, :1])], 1), pos + 1
        out = model(input_ids=token[:, None], attention_mask=attn, position_ids=pos, use_cache=True,
                    **{compat.cache_kwarg(model.llm): cache})
        ref.append(out.logits[:, -1])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_outputs_equal_explicit_removal_and_the_cache_shrinks(tiny, inputs):
    model = tiny[1]
    ids, _, pixels = inputs
    mm = model.prepare_multimodal_inputs(ids[1:], pixels[1:], pruning=PruningConfig())  # one row, no padding
    n_layers = model.config.num_hidden_layers
    dropper = FastVDropper(mm.image_spans, [29], n_layers, layer=LAYER)
    loop = LLMLoop(model.get_model(), model.lm_head, dropper)
    ours = loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)

    lm = model.get_model()
    hidden, pos = mm.inputs_embeds, mm.position_ids

    def run(layers, h, p):
        t = h.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool).tril()[None, None]
        rope = lm.rotary_emb(h, p)
        for layer in layers:
            h = layer(h, attention_mask=causal, position_embeddings=rope, position_ids=p)
        return h

    hidden = run(lm.layers[:LAYER], hidden, pos)
    (start, end), = mm.image_spans[0]
    keep = torch.cat([torch.arange(start), start + dropper.kept[0], torch.arange(end, hidden.shape[1])])
    reduced = run(lm.layers[LAYER:], hidden[:, keep], pos[:, keep])  # pruned tokens removed, positions kept
    torch.testing.assert_close(ours, model.lm_head(lm.norm(reduced))[:, -1], atol=1e-5, rtol=1e-5)
    t = mm.inputs_embeds.shape[1]
    assert loop.kv_lengths() == [t] * LAYER + [t - (576 - 29)] * (n_layers - LAYER)


class KeyBlockingFastV:
    """FastV as its authors wrote it: eager attention weights of layer L-1 pick the tokens, and pruned
    image tokens are hidden as keys from layers >= L through the attention mask (nothing removed)."""

    def __init__(self, model, spans, budget: int, layer: int):
        self.layers = model.get_model().layers
        self.spans, self.budget, self.layer = spans, budget, layer
        self.blocked: torch.Tensor | None = None  # [B, T_prefill]

    def _score(self, _module, _inputs, output):
        weights = output[1]  # eager attention: [B, H, Q, KV]
        if weights.shape[2] == 1 or self.blocked is not None:
            return
        row = weights[:, :, -1].mean(dim=1)  # [B, T]
        blocked = torch.zeros(row.shape, dtype=torch.bool)
        for b, ((start, end),) in enumerate(self.spans):
            blocked[b, start:end] = True
            blocked[b, start + torch.topk(row[b, start:end], self.budget).indices] = False
        self.blocked = blocked

    def _block(self, _module, args, kwargs):
        if self.blocked is None:
            return None
        mask = kwargs["attention_mask"]  # eager: additive float [B, 1, Q, KV]
        kwargs["attention_mask"] = hide_keys(mask, self.blocked)
        return args, kwargs

    def generate(self, model, mm, max_new_tokens: int) -> torch.Tensor:
        hooks = [(self.layers[self.layer - 1].self_attn, "post", self._score)]
        hooks += [(lay, "pre", self._block) for lay in self.layers[self.layer:]]
        return greedy_with_hooks(model, mm, hooks, max_new_tokens)


@pytest.mark.parametrize("batch", [1, 4])
def test_greedy_answers_equal_the_key_blocking_reference(tiny, eager, sample_images, batch):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS[:batch])
    pixels = process_images([sample_images[i % 3] for i in range(batch)], processor, model.config)
    fastv = PruningConfig("fastv", 58, method_args={"layer": LAYER})
    ours = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0,
                          pruning=fastv)
    assert model.last_multimodal.in_llm["kept_after_layer"] == [58] * batch

    mm = eager.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=PruningConfig())
    blocking = KeyBlockingFastV(eager, mm.image_spans, 58, LAYER)
    ref = blocking.generate(eager, mm, 12)
    assert int(blocking.blocked.sum()) == batch * (576 - 58)  # the reference really pruned
    assert ours.tolist() == ref.tolist()


def test_generation_batch_equals_single_and_reports_accounting(tiny, inputs):
    model = tiny[1]
    fastv = PruningConfig("fastv", 64)
    ids, mask, pixels = inputs
    batched = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=8, do_sample=False,
                             pruning=fastv)
    report = model.last_multimodal.in_llm
    n_layers = model.config.num_hidden_layers
    assert report == {"layer": 2, "kept_after_layer": [64, 64],
                      "layer_averaged": [layer_averaged_tokens(576, 64, 2, n_layers)] * 2}
    assert model.last_multimodal.token_counts == [576, 576]  # all tokens enter the LLM
    for b in range(2):
        row = ids[b][mask[b].bool()][None]
        single = model.generate(row, images=pixels[b:b + 1], max_new_tokens=8, do_sample=False, pruning=fastv)
        assert batched[b].tolist() == single[0].tolist()
    with model.pruning_config(PruningConfig("fastv", method_args={"ratio": 0.75, "layer": 3})):
        model.generate(ids[:1, 1:], images=pixels[:1], max_new_tokens=2, do_sample=False)
    assert model.last_multimodal.in_llm["kept_after_layer"] == [144] and model.last_multimodal.in_llm["layer"] == 3
    # PruningConfig's own ratio resolves against the image's 576 tokens, as FastV's R does
    model.generate(ids[:1, 1:], images=pixels[:1], max_new_tokens=2, do_sample=False,
                   pruning=PruningConfig("fastv", ratio=0.75, method_args={"layer": 3}))
    assert model.last_multimodal.in_llm["kept_after_layer"] == [144] and model.last_multimodal.in_llm["layer"] == 3


def test_fastv_budget_and_errors(tiny, inputs):
    assert fastv_budget(576, 64, None) == 64 and fastv_budget(576, None, 0.5) == 288
    assert fastv_budget(576, 1000, None) == 576
    assert layer_averaged_tokens(576, 64, 2, 32) == pytest.approx((2 * 576 + 30 * 64) / 32)
    with pytest.raises(ValueError, match="ratio"):
        fastv_budget(576, None, 1.5)
    with pytest.raises(ValueError, match=r"fastv layer must be in \[1, 3\] for a 4-layer LLM, got 99"):
        FastVDropper([[(0, 576)]], [64], 4, layer=99)
    model, fastv = tiny[1], PruningConfig("fastv", 58)
    ids, mask, pixels = inputs
    with pytest.raises(ValueError, match="beam search"):
        model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=2, num_beams=2, pruning=fastv)
    with pytest.raises(ValueError, match="runs in generate"):
        model(input_ids=ids, images=pixels, attention_mask=mask, pruning=fastv)


def test_fastv_through_model_vqa_loader(tiny_path, tmp_path):
    meta = answer_metadata(tiny_path, tmp_path, "fastv", 58, "layer=2")
    assert meta["pruning_method"] == "fastv" and meta["visual_tokens"] == 576
    assert meta["visual_tokens_after_layer"] == 58 and meta["prune_layer"] == 2
    assert meta["layer_averaged_visual_tokens"] == pytest.approx((2 * 576 + 2 * 58) / 4)
