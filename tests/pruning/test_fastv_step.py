"""FastV as its evaluation scripts run it: selection again at every generated token (`reselect=step`) and
the ranked window moved by one token (`shift=1`, their `--fast-v-sys-length 36`), checked against an
independent reference built on transformers' own LlamaForCausalLM with eager attention."""

from __future__ import annotations

import pytest
import torch

from llava.mm_utils import process_images
from llava.pruning import PruningConfig

from in_llm_helpers import hide_keys, left_padded

LAYER = 2
STEPS = 8
QUESTIONS = ("Describe the picture in detail please.", "What shapes are there?")


def official_rerun(llm, embeds: torch.Tensor, span: tuple[int, int], budget: int, layer: int, shift: int,
                   steps: int, reselect: bool = True) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens of one unpadded row [1, T, H] as FastV's no-cache evaluation computes them.

    Each new token reruns the whole sequence: an eager forward gives layer `layer` - 1's attention,
    the newest token's head-mean row ranks the window [start + shift, end + shift), and a second
    forward hides the window's other tokens as keys from layer `layer` on (the official token-mask
    path; its inplace path removes them, which gives the kept tokens the same outputs). With
    `reselect=False` the prefill's choice is kept for every step. Returns (tokens, blocked per run).
    """
    start, end = span
    layers = llm.model.layers
    tokens, blocked_runs, blocked = [], [], None
    for _ in range(steps):
        t = embeds.shape[1]
        if blocked is None or reselect:
            attn = llm(inputs_embeds=embeds, output_attentions=True).attentions[layer - 1]  # [1, H, T, T]
            row = attn[0, :, -1].mean(dim=0)  # the newest token's row, head mean: [T]
            lo, hi = start + shift, min(end + shift, t - 1)
            top = torch.topk(row[lo:hi], min(budget, hi - lo)).indices + lo
            blocked = torch.zeros(1, t, dtype=torch.bool)
            blocked[0, lo:hi] = True
            blocked[0, top] = False
        else:  # the prefill's choice; later tokens stay visible
            blocked = torch.cat([blocked, torch.zeros(1, t - blocked.shape[1], dtype=torch.bool)], dim=1)
        blocked_runs.append(blocked)
        hide = lambda _m, args, kwargs, b=blocked: (args, {**kwargs, "attention_mask": hide_keys(  # noqa: E731
            kwargs["attention_mask"], b)})
        handles = [lay.register_forward_pre_hook(hide, with_kwargs=True) for lay in layers[layer:]]
        try:
            logits = llm(inputs_embeds=embeds).logits[0, -1]
        finally:
            for h in handles:
                h.remove()
        token = int(logits.argmax())
        tokens.append(token)
        embeds = torch.cat([embeds, llm.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return tokens, blocked_runs


@pytest.fixture(scope="module")
def rows(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS)
    return ids, mask, process_images(sample_images[:2], processor, model.config)


def unpadded(ids, mask, b):
    return ids[b][mask[b].bool()][None]


def until_end(tokens: list[int], eos: int = 2) -> list[int]:
    return tokens[:tokens.index(eos) + 1] if eos in tokens else tokens


@pytest.mark.parametrize("shift", [0, 1])
def test_per_step_reselection_equals_the_official_rerun(tiny, eager, rows, shift):
    model = tiny[1]
    ids, mask, pixels = rows
    cfg = PruningConfig("fastv", 58, method_args={"layer": LAYER, "reselect": "step", "shift": shift})
    batched = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=STEPS, do_sample=False,
                             pad_token_id=0, pruning=cfg)
    for b in range(2):
        row = unpadded(ids, mask, b)
        ours = model.generate(row, images=pixels[b:b + 1], max_new_tokens=STEPS, do_sample=False, pruning=cfg)
        mm = eager.prepare_multimodal_inputs(row, pixels[b:b + 1], pruning=PruningConfig())
        (span,), = mm.image_spans
        ref, blocked = official_rerun(eager.llm, mm.inputs_embeds, span, 58, LAYER, shift, STEPS)
        assert until_end(ours[0].tolist()) == until_end(ref), f"row {b}"
        assert until_end(batched[b].tolist())[:len(until_end(ref))] == until_end(ref), f"row {b} in the batch"
        report = model.last_multimodal.in_llm
        assert report["reselect"] == "step" and report["selections"] == ours.shape[1]
        # the selection really changes after the prefill (else this test would not tell the variants apart)
        firsts = [bl[0, :blocked[0].shape[1]] for bl in blocked]
        assert any(not torch.equal(f, firsts[0]) for f in firsts[1:])


def test_per_step_kept_sets_equal_the_reference_at_every_step(tiny, eager, rows):
    """The loop's selection at each run equals the reference's ranked-out tokens at that run."""
    from llava.model.llm_loop import LLMLoop, generate

    model = tiny[1]
    ids, mask, pixels = rows
    row = unpadded(ids, mask, 0)
    cfg = PruningConfig("fastv", 29, method_args={"layer": LAYER, "reselect": "step"})
    mm = model.prepare_multimodal_inputs(row, pixels[:1], pruning=cfg)
    dropper = model.in_llm_pruner(mm, cfg)
    loop = LLMLoop(model.get_model(), model.lm_head, dropper)
    out = generate(loop, mm.inputs_embeds, mm.attention_mask, mm.position_ids, model.generation_config,
                   max_new_tokens=6, do_sample=False)
    ref_mm = eager.prepare_multimodal_inputs(row, pixels[:1], pruning=PruningConfig())
    (span,), = ref_mm.image_spans
    ref, blocked = official_rerun(eager.llm, ref_mm.inputs_embeds, span, 29, LAYER, 0, 6)
    assert out[0].tolist() == ref[:out.shape[1]]
    assert len(dropper.selections) == out.shape[1]
    start, end = span
    for (kept,), bl in zip(dropper.selections, blocked):
        expected = torch.nonzero(~bl[0, start:end]).flatten()
        assert kept.tolist() == expected.tolist()
    # the cache of the last run holds the kept tokens only from the pruning layer on
    t = mm.inputs_embeds.shape[1] + out.shape[1] - 1
    assert loop.kv_lengths() == [t] * LAYER + [t - (576 - 29)] * (model.config.num_hidden_layers - LAYER)


def test_prefill_selection_equals_the_rerun_with_a_fixed_choice(tiny, eager, rows):
    """The default (`reselect=prefill`) is the rerun reference with the prefill's choice kept."""
    model = tiny[1]
    ids, mask, pixels = rows
    row = unpadded(ids, mask, 1)
    ours = model.generate(row, images=pixels[1:], max_new_tokens=STEPS, do_sample=False,
                          pruning=PruningConfig("fastv", 58, method_args={"layer": LAYER}))
    mm = eager.prepare_multimodal_inputs(row, pixels[1:], pruning=PruningConfig())
    (span,), = mm.image_spans
    ref, _ = official_rerun(eager.llm, mm.inputs_embeds, span, 58, LAYER, 0, STEPS, reselect=False)
    assert until_end(ours[0].tolist()) == until_end(ref)
    assert "reselect" not in model.last_multimodal.in_llm


def test_shift_one_keeps_the_first_image_token_and_ranks_the_next_text_token(tiny, eager, rows):
    """`shift=1`: the window is image tokens 1..N-1 plus the token after the image; image token 0 stays."""
    from llava.model.llm_loop import LLMLoop

    model = tiny[1]
    ids, mask, pixels = rows
    row = unpadded(ids, mask, 0)
    for k in (58, 575):
        cfg = PruningConfig("fastv", k, method_args={"layer": LAYER, "shift": 1})
        mm = model.prepare_multimodal_inputs(row, pixels[:1], pruning=cfg)
        dropper = model.in_llm_pruner(mm, cfg)
        loop = LLMLoop(model.get_model(), model.lm_head, dropper)
        loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
        (start, end), = mm.image_spans[0]
        ref_mm = eager.prepare_multimodal_inputs(row, pixels[:1], pruning=PruningConfig())
        _, (blocked,) = official_rerun(eager.llm, ref_mm.inputs_embeds, (start, end), k, LAYER, 1, 1)
        kept = dropper.kept[0]
        assert kept[0] == 0  # the image's first token is outside the window
        assert kept.tolist() == torch.nonzero(~blocked[0, start:end]).flatten().tolist()
        text_kept = not bool(blocked[0, end])
        assert len(kept) == k + 1 - int(text_kept)  # K ranked tokens, plus image token 0
        t = mm.inputs_embeds.shape[1]
        assert loop.kv_lengths()[LAYER:] == [t - (576 - k)] * (model.config.num_hidden_layers - LAYER)


def test_reselect_and_shift_arguments_are_checked(tiny, rows):
    from llava.pruning.fastv import FastVDropper

    with pytest.raises(ValueError, match=r"fastv reselect must be one of \['prefill', 'step'\], got 'always'"):
        FastVDropper([[(0, 576)]], [64], 4, reselect="always")
    model = tiny[1]
    ids, mask, pixels = rows
    with pytest.raises(ValueError, match=r"reselect=step\): decode with llm_loop.generate"):
        from llava.model.llm_loop import LLMLoop

        mm = model.prepare_multimodal_inputs(unpadded(ids, mask, 0), pixels[:1], pruning=PruningConfig())
        loop = LLMLoop(model.get_model(), model.lm_head, FastVDropper(mm.image_spans, [58], 4, reselect="step"))
        loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
        loop.step(model.get_model().embed_tokens(torch.tensor([5]))[:, None])
    with pytest.raises(ValueError, match="shift"):
        model.generate(unpadded(ids, mask, 0), images=pixels[:1], max_new_tokens=1,
                       pruning=PruningConfig("fastv", 58, method_args={"shift": "one"}))
