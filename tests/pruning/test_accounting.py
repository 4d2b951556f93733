"""One token accounting for every registered method (`llava.pruning.accounting`): the fields every
answer records, the same for pre-LLM methods (K in every layer) and in-LLM ones (counts after each
pruning layer, layer-averaged over the LLM's depth), checked against each dropper's own report and
against the keys the LLM loop really cached."""

from __future__ import annotations

import pytest
import torch
from test_contract import TINY_RUN, in_llm_config

from llava.eval.runner import _merge_reports, _visual_token_report
from llava.pruning import PruningConfig, get_method, list_methods
from llava.pruning.accounting import (ACCOUNTING_KEYS, pruning_stages, tokens_per_layer,
                                      visual_token_accounting)


def test_pre_llm_and_unpruned_counts_are_constant_over_layers():
    assert visual_token_accounting([64, 576], 32) == [
        {"visual_tokens": 64, "prune_layers": [], "visual_tokens_after_layers": [], "layer_averaged_visual_tokens": 64.0},
        {"visual_tokens": 576, "prune_layers": [], "visual_tokens_after_layers": [],
         "layer_averaged_visual_tokens": 576.0}]


def test_one_layer_and_staged_reports():
    fastv = visual_token_accounting([576], 32, {"layer": 2, "kept_after_layer": [64], "layer_averaged": [0]})[0]
    assert fastv == {"visual_tokens": 576, "prune_layers": [2], "visual_tokens_after_layers": [64],
                     "layer_averaged_visual_tokens": (2 * 576 + 30 * 64) / 32, "prune_layer": 2,
                     "visual_tokens_after_layer": 64}
    staged = {"layer": 8, "kept_after_layer": [288, 288], "layers": [8, 16, 24], "kept_per_stage": [[288, 144, 72],
                                                                                                     [288, 144]]}
    a, b = visual_token_accounting([576, 576], 32, staged)
    assert a["visual_tokens_after_layers"] == [288, 144, 72]
    assert a["layer_averaged_visual_tokens"] == (8 * 576 + 8 * 288 + 8 * 144 + 8 * 72) / 32
    assert b["prune_layers"] == [8, 16]  # a stage the image did not reach is left out
    assert tokens_per_layer(10, [(1, 4), (3, 2)], 4) == [10, 4, 4, 2]
    with pytest.raises(ValueError, match="lists 1 images' counts for 2 images"):
        pruning_stages({"layer": 2, "kept_after_layer": [3]}, 2)
    with pytest.raises(ValueError, match="needs 'layer'/'kept_after_layer'"):
        pruning_stages({"kept": [3]}, 1)


def test_text_only_answers_carry_every_field_empty():
    assert _merge_reports([]) == {k: [] for k in (*ACCOUNTING_KEYS, "visual_tokens_unpruned", "visual_token_budget")}


@pytest.mark.parametrize("name", list_methods())
def test_every_method_reports_the_same_fields(name, tiny, tiny_path, sample_images):
    """Through `generate` on the tiny model, read as the runner writes every answer's metadata."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.eval.runner import build_prompt
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.model.llm_loop import LLMLoop

    tokenizer, model, processor, _ = tiny
    ids = torch.tensor([tokenizer_image_token(build_prompt("What is this?", "vicuna_v1", True), tokenizer,
                                              IMAGE_TOKEN_INDEX)])
    pixels = process_images(sample_images[:1], processor, model.config)
    method = get_method(name)
    cfg = in_llm_config(name, TINY_RUN, 64) if method.stage == "in_llm" else PruningConfig(name, 64)
    question = {}
    if "text_relevance" in method.needs:  # CDPruner reads the question, with the CLIP text tower
        from llava.model.builder import load_pretrained_model

        model = load_pretrained_model(tiny_path, device="cpu", torch_dtype="float32", pruning_method=name)[1]
        question = dict(texts=["What is this?"])
    model.generate(ids, images=pixels, max_new_tokens=2, do_sample=False, pad_token_id=0, pruning=cfg, **question)
    layers = model.config.num_hidden_layers
    (rec,) = _visual_token_report(model.last_multimodal, layers)
    assert set(ACCOUNTING_KEYS) <= rec.keys()
    assert rec["visual_tokens"] == model.last_multimodal.token_counts[0]
    if method.stage == "pre_llm":
        assert rec["prune_layers"] == [] and rec["visual_tokens_after_layers"] == []
        assert rec["layer_averaged_visual_tokens"] == rec["visual_tokens"] == 64  # K in every layer
        return
    report = model.last_multimodal.in_llm
    assert rec["prune_layers"] and rec["visual_tokens_after_layer"] == rec["visual_tokens_after_layers"][0]
    if "layer_averaged" in report:  # the dropper's own count agrees with the shared helper
        assert rec["layer_averaged_visual_tokens"] == pytest.approx(report["layer_averaged"][0])
    # and the per-layer counts are what the loop cached: the text tokens plus the image tokens left
    mm = model.prepare_multimodal_inputs(ids, pixels, None, padding_side="left", pruning=cfg)
    loop = LLMLoop(model.get_model(), model.lm_head, model.in_llm_pruner(mm, cfg))
    loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
    text = mm.inputs_embeds.shape[1] - rec["visual_tokens"]
    stages = list(zip(rec["prune_layers"], rec["visual_tokens_after_layers"]))
    assert loop.kv_lengths() == [text + n for n in tokens_per_layer(rec["visual_tokens"], stages, layers)]
