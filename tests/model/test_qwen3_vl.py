"""Qwen3-VL on the platform against transformers' own Qwen3VLForConditionalGeneration.

The tiny checkpoint is written by transformers' classes (`save_pretrained`) and read back by both.
Three images of different sizes and aspect ratios give 60, 60 and 81 merged tokens, so K = 64 keeps
two of them whole and prunes the third.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen3VLForConditionalGeneration
from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision

from llava.model.builder import load_pretrained_model
from llava.model.family_qwen3_vl import save_tiny_qwen3_vl
from llava.model.qwen_layout import MRopeLoop, next_positions
from llava.pruning import PruningConfig, get_method, list_methods

SIZES = [(200, 320), (390, 150), (300, 300)]  # (height, width) -> grids 12x20, 24x10, 18x18 patches
COUNTS = [60, 60, 81]


@pytest.fixture(scope="module")
def q3_path(tmp_path_factory):
    return str(save_tiny_qwen3_vl(tmp_path_factory.mktemp("q3") / "tiny"))


@pytest.fixture(scope="module")
def q3(q3_path):
    torch.set_num_threads(2)
    tokenizer, model, processor, _ = load_pretrained_model(q3_path, device="cpu")
    return tokenizer, model, processor


@pytest.fixture(scope="module")
def reference(q3_path):
    return Qwen3VLForConditionalGeneration.from_pretrained(q3_path).eval()


@pytest.fixture(scope="module")
def batch(q3):
    processor = q3[2]
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is here ?"}]}]
    texts = [processor.apply_chat_template(turn, add_generation_prompt=True)] * len(images)
    processor.tokenizer.padding_side = "left"
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


def _ours(batch, **kwargs):
    return dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], images=batch["pixel_values"],
                image_grid_thw=batch["image_grid_thw"], **kwargs)


def _generate(model, batch, pruning=None, max_new_tokens=1):
    return model.generate(inputs=batch["input_ids"], attention_mask=batch["attention_mask"],
                          images=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"], pruning=pruning,
                          max_new_tokens=max_new_tokens, do_sample=False)


def _image(batch, i):
    """Image i alone: its prompt row (padding dropped), patches and grid."""
    sizes = batch["image_grid_thw"].prod(dim=-1).tolist()
    start = sum(sizes[:i])
    mask = batch["attention_mask"][i].bool()
    return {"input_ids": batch["input_ids"][i:i + 1, mask], "attention_mask": batch["attention_mask"][i:i + 1, mask],
            "pixel_values": batch["pixel_values"][start:start + sizes[i]],
            "image_grid_thw": batch["image_grid_thw"][i:i + 1]}


def test_the_tiny_checkpoint_has_qwen3_vls_geometry(q3, batch):
    model = q3[1]
    vision = model.get_vision_tower().config
    assert (vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size) == (16, 2, 2)
    assert list(vision.deepstack_visual_indexes) == [0, 1]
    assert model.config.rope_parameters["mrope_interleaved"] is True
    assert batch["image_grid_thw"].tolist() == [[1, 12, 20], [1, 24, 10], [1, 18, 18]]
    assert (batch["input_ids"] == model.tokens.image_token_id).sum(dim=1).tolist() == COUNTS


def test_logits_equal_transformers_on_a_batch_of_sizes(q3, reference, batch):
    """Unpruned, and with a budget every image is within (which keeps everything), as transformers' model."""
    model = q3[1]
    with torch.no_grad():
        ref = reference(**batch).logits
        ours = model(**_ours(batch)).logits
        within = model(**_ours(batch, pruning=PruningConfig(visual_token_num=max(COUNTS)))).logits
    mask = batch["attention_mask"].bool()
    torch.testing.assert_close(ours[mask], ref[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(within, ours, atol=0, rtol=0)
    assert model.last_multimodal.kept_indices == [None, None, None]


def test_greedy_tokens_equal_transformers(q3, reference, batch):
    model = q3[1]
    ref = reference.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1]:]
    ours = _generate(model, batch, max_new_tokens=6)
    assert ours.tolist() == ref.tolist()
    assert len(set(map(tuple, ours.tolist()))) > 1  # the images steer the answer
    assert len(set(ours[0].tolist())) > 2  # and the decode steps do not repeat one token


def test_a_decode_step_continues_the_positions_as_transformers(q3, reference, batch):
    """The loop's step logits equal transformers' on the prompt plus that token (positions max + 1 per row)."""
    model = q3[1]
    mm, deep = model.prepare_multimodal_inputs(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                               batch["image_grid_thw"])
    loop = MRopeLoop(model.language_model, model.lm_head, prefill_kwargs=deep)
    first = loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
    token = torch.tensor([5, 9, 17])
    second = loop.step(loop.embed(token)[:, None])
    longer = {**batch, "input_ids": torch.cat([batch["input_ids"], token[:, None]], dim=1),
              "attention_mask": torch.cat([batch["attention_mask"], torch.ones(3, 1, dtype=torch.long)], dim=1),
              "mm_token_type_ids": torch.cat([batch["mm_token_type_ids"], torch.zeros(3, 1, dtype=torch.long)], dim=1)}
    with torch.no_grad():
        ref = reference(**longer).logits
    torch.testing.assert_close(first, ref[:, -2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, ref[:, -1], atol=1e-5, rtol=1e-5)


def test_kept_tokens_keep_their_unpruned_positions(q3, reference, batch):
    model = q3[1]
    cfg = PruningConfig(method="fastervlm", visual_token_num=32)
    full, _ = model.prepare_multimodal_inputs(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                              batch["image_grid_thw"])
    pruned, _ = model.prepare_multimodal_inputs(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                                batch["image_grid_thw"], pruning=cfg)
    rows = lambda mm: [mm.position_ids[:, b, mm.attention_mask[b].bool()] for b in range(3)]  # noqa: E731
    stock, _ = reference.model.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                              image_grid_thw=batch["image_grid_thw"],
                                              attention_mask=batch["attention_mask"])
    image_id = model.tokens.image_token_id
    for b in range(3):
        mask = batch["attention_mask"][b].bool()
        ids, pos = batch["input_ids"][b, mask], stock[:, b, mask]  # [L], [3, L]
        torch.testing.assert_close(rows(full)[b], pos, atol=0, rtol=0)
        start = int(torch.nonzero(ids == image_id)[0])
        kept = pruned.encoded.kept_indices[b]
        keep = torch.ones(len(ids), dtype=torch.bool)
        keep[start:start + COUNTS[b]] = False
        keep[start + kept] = True
        assert kept.tolist() == sorted(set(kept.tolist())) and len(kept) == 32
        # the image's kept tokens and every text token (after the image too) keep their unpruned (t, h, w)
        torch.testing.assert_close(rows(pruned)[b], pos[:, keep], atol=0, rtol=0)
        after = next_positions(pruned.position_ids, pruned.attention_mask)[b]
        assert int(after) == int(pos.max()) + 1 == int(next_positions(full.position_ids, full.attention_mask)[b])
    # the image's positions are on the merged grid: (t, h, w) = (s, s + row, s + col), not 1-D
    h, w = 6, 10  # image 0: 12 x 20 patches -> 6 x 10 merged
    ids = batch["input_ids"][0, batch["attention_mask"][0].bool()]
    start = int(torch.nonzero(ids == image_id)[0])
    img = rows(full)[0][:, start:start + h * w]
    assert img[1].view(h, w)[:, 0].tolist() == [int(img[0, 0]) + r for r in range(h)]
    assert img[2].view(h, w)[0].tolist() == [int(img[0, 0]) + c for c in range(w)]


def test_compact_positions_renumber_a_pruned_image_and_leave_a_whole_one(q3, batch):
    """position_mode='compact': a pruned image's K kept tokens take 1-D positions s .. s + K - 1 and the text
    after it continues at s + K; an image that keeps everything keeps the stock (t, h, w) layout."""
    model = q3[1]
    keep = PruningConfig(visual_token_num=64)
    compact = PruningConfig(visual_token_num=64, position_mode="compact")
    args = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["image_grid_thw"])
    kept_mm, _ = model.prepare_multimodal_inputs(*args, pruning=keep)
    mm, _ = model.prepare_multimodal_inputs(*args, pruning=compact)
    image_id = model.tokens.image_token_id
    for b in range(3):
        (s, e), = mm.image_spans[b]
        ours, stock = mm.position_ids[:, b], kept_mm.position_ids[:, b]
        if b < 2:  # 60 tokens <= 64: not pruned, the stock layout
            torch.testing.assert_close(ours, stock, atol=0, rtol=0)
            continue
        first = int(stock[0, s])
        assert ours[:, s:e].tolist() == [list(range(first, first + 64))] * 3
        text_after = ours[:, e:]
        assert text_after[0].tolist() == list(range(first + 64, first + 64 + text_after.shape[1]))
        assert (batch["input_ids"][b] == image_id).sum() == 81
    out = model.generate(inputs=batch["input_ids"], attention_mask=batch["attention_mask"],
                         images=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"], pruning=compact,
                         max_new_tokens=2, do_sample=False)
    assert out.shape == (3, 2)


def test_a_pruned_run_equals_the_stock_model_with_its_deepstack_embeds_subset(q3, reference, batch):
    """Reference from transformers' own pieces: the stock image features, DeepStack features and positions,
    each subset to the kept tokens, through the stock text model."""
    model = q3[1]
    cfg = PruningConfig(method="fastervlm", visual_token_num=32)
    with torch.no_grad():
        ours = model(**_ours(batch, pruning=cfg)).logits
        kept = model.last_multimodal.kept_indices
        stock = reference.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
        positions, _ = reference.model.get_rope_index(batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
                                                      image_grid_thw=batch["image_grid_thw"],
                                                      attention_mask=batch["attention_mask"])
        image_id = model.tokens.image_token_id
        rows, row_pos = [], []
        for b in range(3):
            mask = batch["attention_mask"][b].bool()
            ids = batch["input_ids"][b, mask]
            start = int(torch.nonzero(ids == image_id)[0])
            keep = torch.ones(len(ids), dtype=torch.bool)
            keep[start:start + COUNTS[b]] = False
            keep[start + kept[b]] = True
            rows.append(ids[keep])
            row_pos.append(positions[:, b, mask][:, keep])
        width = max(len(r) for r in rows)
        ids = torch.zeros(3, width, dtype=torch.long)
        att = torch.zeros(3, width, dtype=torch.long)
        pos = torch.zeros(3, 3, width, dtype=torch.long)
        for b, (r, p) in enumerate(zip(rows, row_pos)):
            ids[b, width - len(r):], att[b, width - len(r):], pos[:, b, width - len(r):] = r, 1, p
        embeds = reference.model.get_input_embeddings()(ids)
        visual = ids == image_id
        embeds[visual] = torch.cat([stock.pooler_output[b][kept[b]] for b in range(3)])
        deep = [torch.cat([layer[b][kept[b]] for b in range(3)]) for layer in stock.deepstack_features]
        text = reference.model.language_model
        ref = reference.lm_head(text(inputs_embeds=embeds, attention_mask=att, position_ids=pos,
                                     visual_pos_masks=visual, deepstack_visual_embeds=deep).last_hidden_state)
        without = reference.lm_head(text(inputs_embeds=embeds, attention_mask=att, position_ids=pos).last_hidden_state)
    assert model.last_multimodal.token_counts == [32, 32, 32]
    m = att.bool()
    torch.testing.assert_close(ours[m], ref[m], atol=1e-5, rtol=1e-5)
    assert (ours[m] - without[m]).abs().max() > 1e-3  # the DeepStack features do reach the LLM


def test_batched_pruned_generation_equals_one_by_one(q3, batch):
    model = q3[1]
    cfg = PruningConfig(method="fastervlm", visual_token_num=48)
    together = _generate(model, batch, cfg, 3)
    for b in range(3):
        one = _image(batch, b)
        alone = model.generate(inputs=one["input_ids"], images=one["pixel_values"],
                               image_grid_thw=one["image_grid_thw"], pruning=cfg, max_new_tokens=3, do_sample=False)
        assert alone.tolist()[0] == together.tolist()[b]


def test_the_adapter_features_equal_the_stock_vision_model(q3, reference, batch):
    """Merging every unit gives the stock visual model's merger and DeepStack outputs."""
    tower = q3[1].get_vision_tower()
    with torch.no_grad():
        stock = reference.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
        images = tower(batch["pixel_values"], batch["image_grid_thw"])
        units = torch.cat([im.signals.features[0] for im in images])  # [sum M, 4D]
        merged = tower.merge(units)
        deep = tower.merge_deepstack([torch.cat([im.deepstack[j] for im in images]) for j in range(2)])
    assert [im.num_tokens for im in images] == COUNTS
    torch.testing.assert_close(units.view(-1, tower.hidden_size), stock.last_hidden_state, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(merged, stock.pooler_output, atol=1e-6, rtol=1e-6)
    for ours, theirs in zip(deep, stock.deepstack_features):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def test_mean_attn_is_the_received_attention_of_the_signal_block_summed_per_group(q3, reference, batch):
    """Against a full softmax map built from the stock block's qkv and transformers' own vision RoPE."""
    tower = q3[1].get_vision_tower()
    visual = reference.model.visual
    assert tower.signal_layer == len(visual.blocks) - 1  # default: the block the merger reads
    one = _image(batch, 0)
    with torch.no_grad():
        got = tower(one["pixel_values"], one["image_grid_thw"], needs={"mean_attn"})[0].signals.mean_attn[0]
        hidden = visual(one["pixel_values"], grid_thw=one["image_grid_thw"],
                        output_hidden_states=True).hidden_states[tower.signal_layer]  # the block's input
        from llava import compat

        _, kw = compat.qwen3_vision_prelude(visual, one["pixel_values"], one["image_grid_thw"])
        block = visual.blocks[tower.signal_layer]
        n, heads = hidden.shape[0], block.attn.num_heads
        q, k, _ = block.attn.qkv(block.norm1(hidden)).reshape(n, 3, heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, *kw["position_embeddings"])
        probs = (torch.einsum("qhd,khd->hqk", q, k) * block.attn.scaling).softmax(-1)  # [H, N, N]
        expected = probs.mean(dim=(0, 1)).view(-1, 4).sum(-1)  # [M]
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(), torch.tensor(1.0), atol=1e-5, rtol=0)


def test_fastervlm_keeps_the_top_merged_tokens_by_mean_attn(q3, batch):
    model = q3[1]
    one = _image(batch, 2)
    model.generate(inputs=one["input_ids"], images=one["pixel_values"], image_grid_thw=one["image_grid_thw"],
                   pruning=PruningConfig(visual_token_num=20), max_new_tokens=1)
    score = model.get_vision_tower()(one["pixel_values"], one["image_grid_thw"],
                                     needs={"cls_attn"})[0].signals.cls_attn[0]  # the mean_attn stand-in
    assert model.last_multimodal.kept_indices[0].tolist() == sorted(score.topk(20).indices.tolist())


def test_visual_token_num_caps_every_image_and_records_the_counts(q3, batch):
    model = q3[1]
    _generate(model, batch, PruningConfig(visual_token_num=64))
    encoded = model.last_multimodal
    assert encoded.token_counts == [60, 60, 64]
    assert encoded.unpruned_counts == COUNTS and encoded.budgets == [64, 64, 64]
    assert encoded.kept_indices[:2] == [None, None] and len(encoded.kept_indices[2]) == 64


def test_a_ratio_resolves_against_each_images_own_count(q3, batch):
    model = q3[1]
    _generate(model, batch, PruningConfig(ratio=0.75))
    encoded = model.last_multimodal
    assert encoded.budgets == [round(n * 0.25) for n in COUNTS] == encoded.token_counts


def test_answers_metadata_reports_count_budget_and_unpruned_count(q3, batch):
    from llava.eval.runner import _visual_token_report

    model = q3[1]
    one = _image(batch, 2)
    model.generate(inputs=one["input_ids"], images=one["pixel_values"], image_grid_thw=one["image_grid_thw"],
                   pruning=PruningConfig(visual_token_num=64), max_new_tokens=1)
    (report,) = _visual_token_report(model.last_multimodal, model.config.num_hidden_layers)
    assert report == {"visual_tokens": 64, "prune_layers": [], "visual_tokens_after_layers": [],
                      "layer_averaged_visual_tokens": 64.0, "visual_tokens_unpruned": 81, "visual_token_budget": 64}


@pytest.mark.parametrize("name", [m for m in list_methods() if get_method(m).stage == "pre_llm"])
def test_every_pre_llm_method_runs_or_names_what_it_lacks(q3, batch, name):
    model, one = q3[1], _image(batch, 2)
    cfg = PruningConfig(method=name, visual_token_num=64)
    needs = get_method(name).needs
    run = lambda: model.generate(inputs=one["input_ids"], images=one["pixel_values"],  # noqa: E731
                                 image_grid_thw=one["image_grid_thw"], pruning=cfg, max_new_tokens=1)
    if "text_relevance" in needs:
        with pytest.raises(ValueError, match=f"pruning method '{name}' cannot run on qwen3_vl: signal "
                                             "'text_relevance'"):
            run()
        return
    if {"cls_feature", "cls_attn_layers"} & needs:
        with pytest.raises(ValueError, match=f"pruning method '{name}' cannot run on qwen3_vl: signal\\(s\\) .* "
                                             "need a \\[CLS\\] token, which Qwen3-VL's ViT lacks"):
            run()
        return
    run()
    assert model.last_multimodal.token_counts == [64]
    kept = model.last_multimodal.kept_indices[0]
    assert kept.tolist() == sorted(set(kept.tolist())) and 0 <= int(kept.min()) and int(kept.max()) < 81


@pytest.mark.parametrize("name", [m for m in list_methods() if get_method(m).stage == "in_llm"])
def test_in_llm_methods_are_refused_in_one_line(q3, batch, name):
    model, one = q3[1], _image(batch, 2)
    with pytest.raises(ValueError, match=f"pruning method '{name}' cannot run on qwen3_vl yet: in-LLM methods"):
        model.generate(inputs=one["input_ids"], images=one["pixel_values"], image_grid_thw=one["image_grid_thw"],
                       pruning=PruningConfig(method=name, visual_token_num=64), max_new_tokens=1)


def test_a_scheduled_in_llm_method_is_refused_without_a_budget_too(q3, batch):
    """PyramidDrop prunes by its schedule alone; running the unpruned model instead would be silent."""
    model, one = q3[1], _image(batch, 2)
    with pytest.raises(ValueError, match="pruning method 'pdrop' cannot run on qwen3_vl yet"):
        model.generate(inputs=one["input_ids"], images=one["pixel_values"], image_grid_thw=one["image_grid_thw"],
                       pruning=PruningConfig("pdrop", method_args={"layers": (1,), "ratios": (0.5,)}),
                       max_new_tokens=1)


def test_a_prompt_whose_image_run_does_not_match_its_grid_is_refused(q3, batch):
    model, one = q3[1], _image(batch, 0)
    with pytest.raises(ValueError, match="prompt 0: image 0 holds 60 pad tokens but its grid gives 81"):
        model(input_ids=one["input_ids"], images=_image(batch, 2)["pixel_values"],
              image_grid_thw=_image(batch, 2)["image_grid_thw"])


def test_a_text_model_without_deepstack_keywords_is_refused_by_name():
    from transformers import Qwen2Config, Qwen2Model

    from llava import compat

    plain = Qwen2Model(Qwen2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, vocab_size=32))
    with pytest.raises(RuntimeError, match=r"Qwen2Model.forward takes no \['visual_pos_masks', "
                                           r"'deepstack_visual_embeds'\] in this transformers release"):
        compat.check_deepstack_kwargs(plain)


def test_the_command_writes_a_checkpoint_the_loader_reads(tmp_path, capsys):
    from llava.model.family_qwen3_vl import main

    main(["--out", str(tmp_path)])
    folder = capsys.readouterr().out.strip()
    assert folder.endswith("qwen3_vl-tiny")
    _, model, processor, _ = load_pretrained_model(folder, device="cpu")
    assert type(model).__name__ == "Qwen3VLForPruning" and type(processor).__name__.startswith("Qwen3VLProcessor")


def test_one_vit_run_serves_several_budgets(q3, batch):
    model, one = q3[1], _image(batch, 2)
    cfg = PruningConfig(method="fastervlm", visual_token_num=64)
    signals = model.vision_signals(one["pixel_values"], one["image_grid_thw"], pruning=cfg)
    for k in (16, 64, 100):
        cfg = cfg.replace(visual_token_num=k)
        fresh = model.generate(inputs=one["input_ids"], images=one["pixel_values"], image_grid_thw=one["image_grid_thw"],
                               pruning=cfg, max_new_tokens=2, do_sample=False)
        kept = model.last_multimodal.kept_indices[0]
        reused = model.generate(inputs=one["input_ids"], vision_signals=signals, pruning=cfg, max_new_tokens=2,
                                do_sample=False)
        assert reused.tolist() == fresh.tolist()
        assert (kept is None and k >= 81) or torch.equal(model.last_multimodal.kept_indices[0], kept)
    with pytest.raises(ValueError, match=r"the vision signals lack \['cls_attn'\], which 'fastervlm' needs"):
        model.generate(inputs=one["input_ids"], vision_signals=model.vision_signals(
            one["pixel_values"], one["image_grid_thw"], needs=frozenset()), pruning=cfg.replace(visual_token_num=8),
            max_new_tokens=1)


def test_two_images_in_one_prompt_equal_transformers_and_prune_each(q3, reference):
    model, processor = q3[1], q3[2]
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(300, 300), (200, 320)]]
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"},
                                         {"type": "text", "text": "what is here ?"}]}]
    two = processor(images=images, text=[processor.apply_chat_template(turn, add_generation_prompt=True)],
                    return_tensors="pt")
    with torch.no_grad():
        ref = reference(**two).logits
        ours = model(**_ours(two)).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    ref_tokens = reference.generate(**two, max_new_tokens=4, do_sample=False)[:, two["input_ids"].shape[1]:]
    assert _generate(model, two, max_new_tokens=4).tolist() == ref_tokens.tolist()
    _generate(model, two, PruningConfig(visual_token_num=32))
    assert model.last_multimodal.token_counts == [32, 32] and model.last_multimodal.unpruned_counts == [81, 60]


def test_early_checkpoints_naming_the_vision_config_qwen3_vl_load_and_others_are_refused(q3_path, tmp_path):
    import json
    import shutil

    for vision_type, ok in (("qwen3_vl", True), ("siglip_vision_model", False)):
        folder = tmp_path / vision_type
        shutil.copytree(q3_path, folder)
        raw = json.loads((folder / "config.json").read_text())
        raw["vision_config"]["model_type"] = vision_type
        (folder / "config.json").write_text(json.dumps(raw))
        if ok:
            assert type(load_pretrained_model(str(folder), device="cpu")[1]).__name__ == "Qwen3VLForPruning"
        else:
            with pytest.raises(ValueError, match="vision_config.model_type='siglip_vision_model'; a Qwen3-VL"):
                load_pretrained_model(str(folder), device="cpu")
