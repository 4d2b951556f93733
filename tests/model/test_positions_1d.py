"""`position_mode` on the 1-D LLaVA layouts (LLaVA-1.5, NeXT, OneVision, Video-LLaVA).

"compact" (the default) renumbers 0, 1, 2, ... after the cut; "keep" gives every kept token the position
it has in the unpruned layout. Checked against the unpruned splice itself: a kept token's position is
the position of the same token (equal embedding) in the unpruned row, and the text after an image keeps
its unpruned positions. Greedy decoding under "keep" equals the stock LLM forward run step by step on
the same embeddings with explicit position ids.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.pruning import PruningConfig


def left_padded(tokenizer, questions) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, L], attention_mask [B, L]) of LLaVA-1.5 prompts with one image each, left-padded."""
    rows = [tokenizer_image_token(build_prompt(q, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX)
            for q in questions]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask

QUESTIONS = ("What shapes are there?", "Describe the picture in detail please.")
KEEP, COMPACT = PruningConfig(position_mode="keep"), PruningConfig(position_mode="compact")


@pytest.fixture(scope="module")
def inputs(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS)
    return ids, mask, process_images(sample_images[:2], processor, model.config)


def assert_same_tokens_same_positions(pruned, full, atol=1e-5):
    """Every token of each pruned row has the embedding of the unpruned row's token at the same position."""
    for b in range(pruned.inputs_embeds.shape[0]):
        valid, full_valid = pruned.attention_mask[b].bool(), full.attention_mask[b].bool()
        pos, emb = pruned.position_ids[b][valid], pruned.inputs_embeds[b][valid]
        full_pos, full_emb = full.position_ids[b][full_valid], full.inputs_embeds[b][full_valid]
        assert full_pos.tolist() == list(range(len(full_pos)))  # the unpruned layout: 0 .. L - 1
        assert pos.unique().numel() == len(pos) and bool((pos.diff() > 0).all())  # increasing, no repeats
        torch.testing.assert_close(emb, full_emb[pos], atol=atol, rtol=1e-5)
        assert pos[-1] == full_pos[-1]  # the text after the image continues as unpruned


def test_nothing_pruned_keep_equals_compact_equals_stock(tiny, inputs):
    model = tiny[1]
    ids, mask, pixels = inputs
    logits = {name: model(input_ids=ids, attention_mask=mask, images=pixels, pruning=cfg).logits
              for name, cfg in (("keep", KEEP), ("compact", COMPACT), ("default", PruningConfig()))}
    mm = model.prepare_multimodal_inputs(ids, pixels, mask, pruning=COMPACT, padding_side="right")
    stock = model.llm(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask).logits  # its own positions
    valid = mm.attention_mask.bool()  # padding rows' logits are not compared
    for name in ("keep", "compact", "default"):
        torch.testing.assert_close(logits[name][valid], stock[valid], atol=1e-6, rtol=0)


def test_kept_tokens_keep_their_unpruned_positions(tiny, inputs):
    model = tiny[1]
    ids, mask, pixels = inputs
    full = model.prepare_multimodal_inputs(ids, pixels, mask, pruning=COMPACT)
    for method in ("fastervlm", "random", "divprune"):
        keep = PruningConfig(method, visual_token_num=20, position_mode="keep")
        pruned = model.prepare_multimodal_inputs(ids, pixels, mask, pruning=keep)
        assert pruned.inputs_embeds.shape[1] == full.inputs_embeds.shape[1] - 556
        assert_same_tokens_same_positions(pruned, full)
        kept = pruned.encoded.kept_indices
        for b, ((s, e),) in enumerate(pruned.image_spans):  # a kept patch j sits at the image's start + j
            start = int(full.image_spans[b][0][0] - (full.attention_mask[b] == 0).sum())
            assert pruned.position_ids[b, s:e].tolist() == (start + kept[b]).tolist()
    compact = model.prepare_multimodal_inputs(ids, pixels, mask, pruning=PruningConfig(visual_token_num=20))
    valid = compact.attention_mask.bool()
    assert compact.position_ids[0][valid[0]].tolist() == list(range(int(valid[0].sum())))  # the default: compact


def _reference_greedy(model, embeds, mask, positions, steps):
    """Greedy tokens from the stock LLM forward, no cache, the whole sequence each step; a new token takes
    one past its row's largest position."""
    out = []
    for _ in range(steps):
        token = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits[:, -1].argmax(-1)
        out.append(token)
        nxt = positions.masked_fill(mask == 0, -1).amax(dim=1, keepdim=True) + 1
        embeds = torch.cat([embeds, model.get_input_embeddings()(token)[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        positions = torch.cat([positions, nxt], dim=1)
    return torch.stack(out, dim=1)


def test_greedy_under_keep_equals_the_stock_forward_step_by_step(tiny, inputs):
    model = tiny[1]
    ids, mask, pixels = inputs
    keep = PruningConfig(visual_token_num=16, position_mode="keep")
    out = model.generate(ids, images=pixels, attention_mask=mask, pruning=keep, max_new_tokens=6, do_sample=False,
                         min_new_tokens=6)
    mm = model.prepare_multimodal_inputs(ids, pixels, mask, pruning=keep)
    assert bool((mm.position_ids.amax(1) > mm.attention_mask.sum(1) - 1).all())  # there are gaps
    assert out.tolist() == _reference_greedy(model, mm.inputs_embeds, mm.attention_mask, mm.position_ids, 6).tolist()
    compact = model.generate(ids, images=pixels, attention_mask=mask, pruning=keep.replace(position_mode="compact"),
                             max_new_tokens=6, do_sample=False, min_new_tokens=6)
    mm_c = model.prepare_multimodal_inputs(ids, pixels, mask, pruning=keep.replace(position_mode="compact"))
    assert compact.tolist() == _reference_greedy(model, mm_c.inputs_embeds, mm_c.attention_mask, mm_c.position_ids,
                                                 6).tolist()


def test_a_prompt_ending_in_a_pruned_image_continues_past_its_largest_position(tiny, sample_images):
    """The last kept patch is not the image's last slot: decoding continues one past the row's largest position
    (through the LLM loop, since transformers' generate continues from the last one)."""
    _, model, processor, _ = tiny
    ids = torch.tensor([[1, 306, 1074, IMAGE_TOKEN_INDEX]])
    pixels = process_images(sample_images[:1], processor, model.config)
    keep = PruningConfig("random", visual_token_num=10, position_mode="keep")
    mm = model.prepare_multimodal_inputs(ids, pixels, None, pruning=keep)
    out = model.generate(ids, images=pixels, pruning=keep, max_new_tokens=4, do_sample=False)
    assert out.tolist() == _reference_greedy(model, mm.inputs_embeds, mm.attention_mask, mm.position_ids,
                                             out.shape[1]).tolist()


def test_merging_methods_cannot_keep_positions(tiny, inputs):
    model = tiny[1]
    ids, mask, pixels = inputs
    with pytest.raises(ValueError, match="tokens at no slot of the unpruned layout"):
        model.prepare_multimodal_inputs(ids, pixels, mask,
                                        pruning=PruningConfig("visionzip", visual_token_num=20, position_mode="keep"))
    with pytest.raises(ValueError, match="position_mode must be one of"):
        PruningConfig(position_mode="dense")


def test_anyres_kept_tokens_and_newlines_keep_their_positions(next_model, sample_images):
    tokenizer, model, processor, _ = next_model
    ids, mask = left_padded(tokenizer, QUESTIONS)
    images = sample_images[1:3]
    pixels = process_images(images, processor, model.config)
    sizes = [im.size for im in images]
    full = model.prepare_multimodal_inputs(ids, pixels, mask, image_sizes=sizes, pruning=COMPACT)
    keep = PruningConfig(visual_token_num=40, position_mode="keep")
    pruned = model.prepare_multimodal_inputs(ids, pixels, mask, image_sizes=sizes, pruning=keep)
    assert pruned.inputs_embeds.shape[1] < full.inputs_embeds.shape[1]
    assert_same_tokens_same_positions(pruned, full)  # newlines included: each at its row's end


def test_the_drivers_take_position_mode_and_record_it(tiny_path, tmp_path):
    import json

    from llava.eval.model_vqa_loader import main

    samples = Path(__file__).resolve().parents[2] / "assets" / "samples"
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 0, "image": "shapes.png", "text": "What is it?"}) + "\n")
    answers = tmp_path / "a.jsonl"
    main(["--model-path", tiny_path, "--question-file", str(q), "--image-folder", str(samples),
          "--answers-file", str(answers), "--visual-token-num", "16", "--position-mode", "keep",
          "--max_new_tokens", "2", "--temperature", "0", "--device", "cpu"])
    record = json.loads(answers.read_text().splitlines()[0])
    assert record["metadata"]["position_mode"] == "keep"
    with pytest.raises(SystemExit):
        main(["--model-path", tiny_path, "--question-file", str(q), "--position-mode", "dense"])
