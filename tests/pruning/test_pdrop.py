"""PyramidDrop through the LLM loop, against references written from the official rule
(Cooperx521/PyramidDrop, llava/model/modeling_llama_pdrop.py):

- an explicit-removal forward of the stock layers, eager attention, renumbered positions
  (the official default), for the prefill and for the decode steps;
- a key-blocking formulation through transformers' own `generate` (positions renumbered or kept);
- the KV cache shrinking per stage, the accounting, batch = singles, and the argument parsing.
"""

from __future__ import annotations


import pytest
import torch

from llava.mm_utils import process_images
from llava.pruning import PruningConfig, parse_method_args
from llava.pruning.pdrop import PyramidDropDropper, pdrop_schedule, stage_counts, stage_layer_average

from in_llm_helpers import answer_metadata, greedy_with_hooks, left_padded, loop_greedy

LAYERS = (1, 2, 3)  # the tiny LLM has 4 layers
COUNTS = [288, 144, 72]  # int(576 * 0.5 ** s)
QUESTIONS = ("What shapes are there?", "Describe the picture in detail please.", "Is it red?")


def config(**args) -> PruningConfig:
    return PruningConfig("pdrop", 576, method_args={"layers": LAYERS, **args})


@torch.no_grad()
def reference(model, embeds: torch.Tensor, span: tuple[int, int], prefill: int, ratios, layers=LAYERS,
              renumber: bool = True):
    """The official rule on one unpadded row, written out with the stock layers (eager attention).

    embeds [1, T, H] hold the prefill (its first `prefill` tokens) and then any generated tokens.
    Before each stage layer L, layer L's own attention (input norm, q/k, RoPE, causal softmax) gives
    the last prompt token's row, averaged over heads; the image tokens still present with the top
    int(N * ratio) scores stay, the rest leave; the survivors take positions 0..len-1 (official) or
    keep theirs. -> (logits [T', V] of the prefill's last token and every generated one, kept per stage)
    """
    lm = model.get_model()
    start, end = span
    n = end - start
    hidden = embeds
    origin = torch.arange(embeds.shape[1])
    pos = origin[None].clone()
    kept_stages = []

    def causal(t):
        future = ~torch.ones(t, t, dtype=torch.bool).tril()
        return torch.zeros(1, 1, t, t).masked_fill(future, torch.finfo(torch.float32).min)

    for i, layer in enumerate(lm.layers):
        if i in layers:
            stage = layers.index(i)
            t = hidden.shape[1]
            last = int(torch.nonzero(origin == prefill - 1))
            _, weights = layer.self_attn(layer.input_layernorm(hidden), position_embeddings=lm.rotary_emb(hidden, pos),
                                         attention_mask=causal(t))  # eager: weights [1, heads, T, T]
            row = weights[0, :, last].mean(dim=0)  # [T]
            image = torch.nonzero((origin >= start) & (origin < end)).flatten()
            top = image[torch.topk(row[image], int(n * ratios[stage])).indices.sort().values]
            kept_stages.append((origin[top] - start).tolist())
            keep = torch.cat([torch.nonzero(origin < start).flatten(), top, torch.nonzero(origin >= end).flatten()])
            hidden, origin = hidden[:, keep], origin[keep]
            pos = torch.arange(len(keep))[None] if renumber else pos[:, keep]
        t = hidden.shape[1]
        hidden = layer(hidden, attention_mask=causal(t), position_embeddings=lm.rotary_emb(hidden, pos),
                       position_ids=pos)
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    logits = model.lm_head(lm.norm(hidden))[0]
    return logits[origin >= prefill - 1], kept_stages


@pytest.mark.parametrize("renumber", [True, False])
def test_prefill_and_decode_equal_the_explicit_reference(tiny, eager, sample_images, renumber):
    tokenizer, model, processor, _ = tiny
    ids, _ = left_padded(tokenizer, QUESTIONS[:1])
    pixels = process_images(sample_images[:1], processor, model.config)
    mm = model.prepare_multimodal_inputs(ids, pixels, padding_side="left", pruning=PruningConfig())
    dropper = PyramidDropDropper(mm.image_spans, [576], model.config.num_hidden_layers, layers=LAYERS,
                                 positions="renumber" if renumber else "keep")
    loop, ours, tokens = loop_greedy(model, mm, dropper, 4)
    t = mm.inputs_embeds.shape[1]
    full = torch.cat([mm.inputs_embeds, model.get_model().embed_tokens(torch.stack(tokens, 1))], dim=1)
    ref, stages = reference(eager, full, mm.image_spans[0][0], t, (0.5, 0.25, 0.125), renumber=renumber)
    assert [s.tolist() for s in dropper.stages[0]] == stages
    assert [len(s) for s in stages] == COUNTS
    assert all(set(b) <= set(a) for a, b in zip(stages, stages[1:]))  # each stage picks among the survivors
    # eager reference vs the SDPA loop: fp32 round-off on logits of magnitude ~10
    torch.testing.assert_close(torch.cat(ours), ref, atol=5e-5, rtol=1e-5)
    # the cache really shrinks per stage: 576 image tokens, then 288, 144, 72 (and the 4 decoded tokens)
    text = t - 576
    assert loop.kv_lengths() == [t + 4, text + 288 + 4, text + 144 + 4, text + 72 + 4]


class KeyBlockingPDrop:
    """PyramidDrop as key blocking in transformers' own generate (eager, nothing removed): before each
    stage layer L, layer L's own attention on its input, with the keys blocked so far hidden, scores
    the image tokens; from layer L on, the dropped ones are hidden as keys through the attention mask.
    With `renumber` (the official default) the tokens still seen by a layer take consecutive positions
    there (the rotary tables handed to the layer are rebuilt), and decode positions drop by the tokens
    removed before that layer."""

    def __init__(self, model, spans, valid, ratios, layers=LAYERS, renumber=True):
        self.lm = model.get_model()
        self.spans, self.valid, self.ratios, self.layers = spans, valid.bool(), ratios, layers  # valid: [B, T]
        self.renumber = renumber
        self.blocked: dict[int, torch.Tensor] = {}  # stage layer -> [B, T_prefill] bool

    def _hook(self, index):
        def pre(layer, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            mask, rope, pos = kwargs["attention_mask"], kwargs["position_embeddings"], kwargs["position_ids"]
            if hidden.shape[1] > 1 and index in self.layers:  # prefill: score, then block
                self._apply(kwargs, hidden, mask, rope, pos, self._so_far(index))
                _, weights = layer.self_attn(layer.input_layernorm(hidden), attention_mask=kwargs["attention_mask"],
                                             position_embeddings=kwargs["position_embeddings"])
                row = weights[:, :, -1].mean(dim=1)  # [B, T]
                before = self._so_far(index)
                blocked = torch.zeros(row.shape, dtype=torch.bool) if before is None else before.clone()
                stage = self.layers.index(index)
                for b, ((start, end),) in enumerate(self.spans):
                    alive = start + torch.nonzero(~blocked[b, start:end]).flatten()
                    keep = alive[torch.topk(row[b, alive], int((end - start) * self.ratios[stage])).indices]
                    blocked[b, start:end] = True
                    blocked[b, keep] = False
                self.blocked[index] = blocked
            self._apply(kwargs, hidden, mask, rope, pos, self._so_far(index + 1))
            return args, kwargs
        return pre

    def _so_far(self, index):
        done = [layer for layer in self.blocked if layer < index]
        return self.blocked[max(done)] if done else None

    def _apply(self, kwargs, hidden, mask, rope, pos, blocked):
        """The layer's mask (blocked keys hidden) and, when renumbering, its positions and rotary tables."""
        kwargs["attention_mask"], kwargs["position_embeddings"], kwargs["position_ids"] = mask, rope, pos
        if blocked is None:
            return
        extra = torch.zeros(mask.shape[0], mask.shape[-1] - blocked.shape[1], dtype=torch.bool)
        block = torch.cat([blocked, extra], dim=1)[:, None, None, :]
        kwargs["attention_mask"] = mask.masked_fill(block, torch.finfo(mask.dtype).min)
        if self.renumber:
            seen = self.valid & ~blocked  # [B, T] prefill tokens this layer still sees
            if hidden.shape[1] > 1:
                new = (seen.long().cumsum(dim=1) - 1).clamp(min=0)
            else:
                new = pos - (self.valid & blocked).sum(dim=1, keepdim=True)
            kwargs["position_ids"] = new
            kwargs["position_embeddings"] = self.lm.rotary_emb(hidden, new)

    def generate(self, model, mm, max_new_tokens: int) -> torch.Tensor:
        return greedy_with_hooks(model, mm, [(lay, "pre", self._hook(i)) for i, lay in enumerate(self.lm.layers)],
                                 max_new_tokens)


@pytest.mark.parametrize("positions", ["renumber", "keep"])
@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_answers_equal_the_key_blocking_reference(tiny, eager, sample_images, batch, positions):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS[:batch])
    pixels = process_images([sample_images[i % 3] for i in range(batch)], processor, model.config)
    ours = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0,
                          pruning=config(positions=positions))
    assert model.last_multimodal.in_llm["kept_per_stage"] == [COUNTS] * batch

    mm = eager.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=PruningConfig())
    blocking = KeyBlockingPDrop(eager, mm.image_spans, mm.attention_mask, (0.5, 0.25, 0.125),
                                renumber=positions == "renumber")
    ref = blocking.generate(eager, mm, 10)
    assert [int(blocking.blocked[i].sum()) for i in LAYERS] == [batch * (576 - c) for c in COUNTS]
    assert ours.tolist() == ref.tolist()


def test_batch_equals_single_determinism_and_accounting(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS)
    pixels = process_images(sample_images, processor, model.config)
    batched = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             pruning=config())
    report = model.last_multimodal.in_llm
    kept = [k.tolist() for k in model.last_multimodal.kept_indices]
    average = (576 * 1 + 288 + 144 + 72) / 4
    assert report == {"layer": 1, "kept_after_layer": [288] * 3, "layer_averaged": [average] * 3,
                      "layers": [1, 2, 3], "kept_per_stage": [COUNTS] * 3}
    again = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=6, do_sample=False,
                           pruning=config())
    assert torch.equal(batched, again) and [k.tolist() for k in model.last_multimodal.kept_indices] == kept
    for b in range(3):
        row = ids[b][mask[b].bool()][None]
        single = model.generate(row, images=pixels[b:b + 1], max_new_tokens=6, do_sample=False, pruning=config())
        assert batched[b].tolist() == single[0].tolist()
        assert model.last_multimodal.kept_indices[0].tolist() == kept[b]
    # no --visual-token-num: the schedule still runs (it is in the arguments)
    model.generate(ids[0][mask[0].bool()][None], images=pixels[:1], max_new_tokens=2, do_sample=False,
                   pruning=PruningConfig("pdrop", method_args={"layers": LAYERS}))
    assert model.last_multimodal.in_llm["kept_per_stage"] == [COUNTS]
    # no pruning when every stage keeps everything: the stock model's answer
    full = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=6, do_sample=False,
                          pruning=PruningConfig())
    same = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=6, do_sample=False,
                          pruning=config(ratios=(1.0, 1.0, 1.0)))
    assert model.last_multimodal.in_llm["kept_per_stage"] == [[576] * 3] * 3
    assert same.tolist() == full.tolist()


def test_schedule_arguments_and_errors():
    assert parse_method_args("layers=8:16:24,ratios=0.5:0.25:0.125", "pdrop") == \
        {"layers": (8, 16, 24), "ratios": (0.5, 0.25, 0.125)}
    assert pdrop_schedule((8, 16, 24), None, 0.5, 32) == ((8, 16, 24), (0.5, 0.25, 0.125))
    assert pdrop_schedule(2, 0.5, None, 4) == ((2,), (0.5,))
    assert stage_counts(576, (0.5, 0.25, 0.125)) == [288, 144, 72]
    assert stage_counts(2880, (0.5, 0.25, 0.125)) == [1440, 720, 360]
    assert stage_layer_average(576, [288, 144, 72], (8, 16, 24), 32) == (8 * 576 + 8 * 288 + 8 * 144 + 8 * 72) / 32
    with pytest.raises(ValueError, match="one ratio per stage layer"):
        pdrop_schedule((8, 16, 24), (0.5, 0.25), None, 32)
    with pytest.raises(ValueError, match=r"layers must increase within \[1, 31\]"):
        pdrop_schedule((16, 8), None, 0.5, 32)
    with pytest.raises(ValueError, match=r"layers must increase within \[1, 3\] for a 4-layer LLM"):
        pdrop_schedule((8, 16, 24), None, 0.5, 4)
    with pytest.raises(ValueError, match="ratios must be in"):
        pdrop_schedule((8, 16), (0.25, 0.5), None, 32)
    with pytest.raises(ValueError, match="lambda must be in"):
        pdrop_schedule((8,), None, 1.5, 32)
    with pytest.raises(ValueError, match="not from the budget"):
        PyramidDropDropper([[(0, 576)]], [64], 4, layers=LAYERS)
    with pytest.raises(ValueError, match="positions must be one of"):
        PyramidDropDropper([[(0, 576)]], [576], 4, layers=LAYERS, positions="shift")


def test_pdrop_through_model_vqa_loader(tiny_path, tmp_path):
    meta = answer_metadata(tiny_path, tmp_path, "pdrop", 576, "layers=1:2:3,lambda=0.5")
    assert meta["pruning_method"] == "pdrop" and meta["visual_tokens"] == 576
    assert meta["prune_layer"] == 1 and meta["visual_tokens_after_layer"] == 288
    assert meta["prune_layers"] == [1, 2, 3] and meta["visual_tokens_after_layers"] == COUNTS
    assert meta["layer_averaged_visual_tokens"] == pytest.approx((576 + 288 + 144 + 72) / 4)
