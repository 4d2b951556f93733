"""FastV inside the LLM: scores equal eager attention; outputs equal an explicit token removal."""

from __future__ import annotations

import json

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.pruning import PruningConfig
from llava.pruning.fastv import FastVPruner, fastv_budget, layer_averaged_tokens

LAYER = 2


@pytest.fixture(scope="module")
def inputs(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    rows = [tokenizer_image_token(build_prompt(q, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX)
            for q in ("What shapes are there?", "Describe the picture in detail please.")]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, process_images(sample_images[:2], processor, model.config)


def test_scores_and_kept_tokens_equal_eager_attention(tiny, tiny_path, inputs):
    model = tiny[1]
    ids, mask, pixels = inputs
    mm = model.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=PruningConfig())
    pruner = FastVPruner(model, mm.image_spans, [58, 58], mm.attention_mask, layer=LAYER)
    with pruner.installed():
        model(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask, position_ids=mm.position_ids)

    _, eager, _, _ = load_pretrained_model(tiny_path, device="cpu", attn_implementation="eager")
    out = eager(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask, position_ids=mm.position_ids,
                output_attentions=True)
    ref = out.attentions[LAYER - 1][:, :, -1].mean(dim=1)  # last prompt token's row, head mean: [B, T]
    torch.testing.assert_close(pruner.scores, ref, atol=1e-6, rtol=1e-5)
    for b, ((start, end),) in enumerate(mm.image_spans):
        expected = torch.topk(ref[b, start:end], 58).indices.sort().values
        assert pruner.kept[b].tolist() == expected.tolist()


def test_outputs_equal_explicit_removal_of_pruned_tokens(tiny, inputs):
    model = tiny[1]
    ids, _, pixels = inputs
    mm = model.prepare_multimodal_inputs(ids[1:], pixels[1:], pruning=PruningConfig())  # one row, no padding
    pruner = FastVPruner(model, mm.image_spans, [29], mm.attention_mask, layer=LAYER)
    with pruner.installed():
        ours = model(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask).logits

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
    keep = torch.cat([torch.arange(start), start + pruner.kept[0], torch.arange(end, hidden.shape[1])])
    reduced = run(lm.layers[LAYER:], hidden[:, keep], pos[:, keep])  # pruned tokens removed, positions kept
    ref = model.lm_head(lm.norm(reduced))
    torch.testing.assert_close(ours[:, keep], ref, atol=1e-5, rtol=1e-5)


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


def test_fastv_budget_and_errors(tiny):
    assert fastv_budget(576, 64, None) == 64 and fastv_budget(576, None, 0.5) == 288
    assert fastv_budget(576, 1000, None) == 576
    assert layer_averaged_tokens(576, 64, 2, 32) == pytest.approx((2 * 576 + 30 * 64) / 32)
    with pytest.raises(ValueError, match="ratio"):
        fastv_budget(576, None, 1.5)
    with pytest.raises(ValueError, match="layer must be in"):
        FastVPruner(tiny[1], [[(0, 576)]], [64], torch.ones(1, 600), layer=99)


def test_fastv_through_model_vqa_loader(tiny_path, tmp_path):
    from pathlib import Path

    from llava.eval.model_vqa_loader import main

    samples = Path(__file__).resolve().parents[2] / "assets" / "samples"
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "image": "shapes.png", "text": "What?"}) + "\n")
    main(["--model-path", tiny_path, "--question-file", str(q), "--image-folder", str(samples),
          "--answers-file", str(tmp_path / "a.jsonl"), "--temperature", "0", "--max_new_tokens", "3",
          "--device", "cpu", "--visual-token-num", "58", "--pruning-method", "fastv", "--pruning-args", "layer=2"])
    meta = json.loads((tmp_path / "a.jsonl").read_text())["metadata"]
    assert meta["pruning_method"] == "fastv" and meta["visual_tokens"] == 576
    assert meta["visual_tokens_after_layer"] == 58 and meta["prune_layer"] == 2
    assert meta["layer_averaged_visual_tokens"] == pytest.approx((2 * 576 + 2 * 58) / 4)
