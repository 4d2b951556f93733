"""LLaVA-OneVision on the platform against transformers' own LlavaOnevisionForConditionalGeneration.

The tiny checkpoint is written by transformers' classes (`save_pretrained`) and read back by both.
It uses anyres_max_2, so the test images down-sample at small sizes and the sequences stay short.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaOnevisionForConditionalGeneration

from llava.model.builder import load_pretrained_model
from llava.model.family_onevision import save_tiny_onevision
from llava.model.onevision import image_grid
from llava.pruning import PruningConfig, list_methods, get_method

# (height, width): cut in columns, cut in rows, and one that down-samples (3 x 3 crops).
SIZES = [(300, 500), (500, 300), (800, 1000)]


@pytest.fixture(scope="module")
def ov_path(tmp_path_factory):
    return str(save_tiny_onevision(tmp_path_factory.mktemp("ov") / "tiny", vision_aspect_ratio="anyres_max_2"))


@pytest.fixture(scope="module")
def ov(ov_path):
    tokenizer, model, processor, _ = load_pretrained_model(ov_path, device="cpu")
    return tokenizer, model, processor


@pytest.fixture(scope="module")
def reference(ov_path):
    return LlavaOnevisionForConditionalGeneration.from_pretrained(ov_path).eval()


def _batch(processor, side: str):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is here ?"}]}]
    texts = [processor.apply_chat_template(turn, add_generation_prompt=True)] * len(images)
    processor.tokenizer.padding_side = side
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def batch(ov):
    """Left-padded, for generation."""
    return _batch(ov[2], "left")


@pytest.fixture(scope="module")
def batch_right(ov):
    """Right-padded: transformers' model numbers positions from the row start only then (as ours always do)."""
    return _batch(ov[2], "right")


def _ours(model, batch, **kwargs):
    return dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                images=batch["pixel_values"], image_sizes=batch["image_sizes"], **kwargs)


def _generate(model, batch, pruning=None, max_new_tokens=1):
    return model.generate(inputs=batch["input_ids"], attention_mask=batch["attention_mask"],
                          images=batch["pixel_values"], image_sizes=batch["image_sizes"], pruning=pruning,
                          max_new_tokens=max_new_tokens, do_sample=False)


def test_the_layouts_cover_padding_cuts_and_down_sampling(ov, batch):
    grids = [image_grid(s, ov[1].family_inputs.keywords["geometry"]) for s in SIZES]
    assert (grids[0].rows, grids[0].cols, grids[0].cut_rows, grids[0].cut_cols) == (1, 2, slice(0, 27), slice(4, 50))
    assert (grids[1].rows, grids[1].cols, grids[1].cut_rows, grids[1].cut_cols) == (2, 1, slice(4, 50), slice(0, 27))
    assert (grids[2].rows, grids[2].cols, grids[2].out_h, grids[2].out_w) == (3, 3, 34, 42)
    assert [g.downsampled for g in grids] == [False, False, True]
    image_id = ov[1].family_inputs.keywords["geometry"].image_token_id
    assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == [g.num_tokens for g in grids]


def test_logits_equal_transformers_on_a_batch_of_sizes(ov, reference, batch_right):
    """Unpruned, and with a budget every image is within (which keeps everything), as transformers' model."""
    model, batch = ov[1], batch_right
    big = max(image_grid(s, model.family_inputs.keywords["geometry"]).num_tokens for s in SIZES)
    with torch.no_grad():
        ref = reference(**batch).logits
        ours = model(**_ours(model, batch)).logits
        within = model(**_ours(model, batch, pruning=PruningConfig(visual_token_num=big))).logits
    mask = batch["attention_mask"].bool()
    for b in range(len(SIZES)):
        n = int(mask[b].sum())
        torch.testing.assert_close(ours[b, :n], ref[b][mask[b]], atol=1e-5, rtol=1e-5)  # ours: right-padded
    torch.testing.assert_close(within, ours, atol=0, rtol=0)


def test_greedy_tokens_equal_transformers(ov, reference, batch):
    model = ov[1]
    ref = reference.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1]:]
    ours = model.generate(inputs=batch["input_ids"], attention_mask=batch["attention_mask"],
                          images=batch["pixel_values"], image_sizes=batch["image_sizes"], max_new_tokens=6,
                          do_sample=False)
    assert ours.tolist() == ref.tolist()
    assert len(set(map(tuple, ours.tolist()))) > 1  # the images steer the answer


def test_visual_token_num_caps_every_image_newlines_included(ov, batch):
    model, k = ov[1], 64
    _generate(model, batch, PruningConfig(method="fastervlm", visual_token_num=k))
    encoded = model.last_multimodal
    # fastervlm ranks, so the largest fit is found: one more token would bring a newline too
    assert all(n in (k - 1, k) for n in encoded.token_counts)
    assert encoded.unpruned_counts == [image_grid(s, model.family_inputs.keywords["geometry"]).num_tokens
                                       for s in SIZES]


def test_a_ratio_resolves_against_each_images_own_count(ov, batch):
    model = ov[1]
    _generate(model, batch, PruningConfig(ratio=0.75))
    encoded = model.last_multimodal
    assert encoded.budgets == [round(n * 0.25) for n in encoded.unpruned_counts]
    assert all(n <= k for n, k in zip(encoded.token_counts, encoded.budgets))


def test_fastervlm_ranks_by_mean_received_attention(ov, batch):
    """fastervlm's kept base-view patches are the top ones by the probe's mean received attention."""
    model = ov[1]
    tower = model.get_vision_tower()
    pixels = batch["pixel_values"][0, :1]  # the first image's base view
    plain = tower(pixels, needs=frozenset({"mean_attn"})).mean_attn[0]  # [729]
    stand_in = tower(pixels, needs=frozenset({"cls_attn"})).cls_attn[0]
    torch.testing.assert_close(stand_in, plain)
    # the signal is the mean over all queries of each key's attention: the rows sum to 1, so it does too
    torch.testing.assert_close(plain.sum(), torch.tensor(1.0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("stand_in", ["feature_norm", "pooled_query_attn", "mean_attn_deep"])
def test_a_call_chooses_the_cls_stand_in(ov, batch, stand_in):
    """`cls_stand_in` in fastervlm's options replaces the tower's default for that call only."""
    from llava.model.llava_arch import run_tower

    model = ov[1]
    tower = model.get_vision_tower()
    pixels = batch["pixel_values"][0, :1]
    cfg = PruningConfig("fastervlm", 64, method_args={"cls_stand_in": stand_in})
    got = run_tower(tower, pixels, frozenset({"cls_attn"}), cfg)
    torch.testing.assert_close(got.cls_attn, getattr(tower(pixels, needs=frozenset({stand_in})), stand_in))
    assert got.values.keys() == {"cls_attn"}
    one = {key: value[:1] for key, value in batch.items()}
    _generate(model, one, pruning=cfg)
    assert model.last_multimodal.token_counts[0] <= 64


@pytest.mark.parametrize("name", [m for m in list_methods() if get_method(m).stage == "pre_llm"])
def test_every_pre_llm_method_runs_or_names_what_it_lacks(ov, batch, name):
    model, batch = ov[1], {key: value[:1] for key, value in batch.items()}  # one image is enough
    cfg = PruningConfig(method=name, visual_token_num=64)
    needs_cls = {"cls_feature", "cls_attn_layers"} & get_method(name).needs
    if "text_relevance" in get_method(name).needs:  # CDPruner: OneVision ships no text tower
        with pytest.raises(ValueError, match=f"pruning method '{name}' cannot run on llava-onevision: .*text tower"):
            _generate(model, batch, cfg)
        return
    if needs_cls:
        with pytest.raises(ValueError, match=f"pruning method '{name}' cannot run on llava-onevision: .*"
                                             f"need a \\[CLS\\] token, which SigLIP lacks"):
            _generate(model, batch, cfg)
        return
    _generate(model, batch, cfg)
    assert all(n <= 64 for n in model.last_multimodal.token_counts)


def test_batch_equals_one_by_one_when_pruned(ov, batch):
    model = ov[1]
    cfg = PruningConfig(method="fastervlm", visual_token_num=64)
    together = _generate(model, batch, cfg, 2)
    for b in range(len(SIZES)):
        mask = batch["attention_mask"][b].bool()
        alone = model.generate(inputs=batch["input_ids"][b:b + 1, mask], images=batch["pixel_values"][b:b + 1],
                               image_sizes=batch["image_sizes"][b:b + 1], pruning=cfg, max_new_tokens=2,
                               do_sample=False)
        assert alone.tolist()[0] == together.tolist()[b]


def test_a_prompt_whose_image_run_does_not_match_its_size_is_refused(ov, batch):
    model = ov[1]
    ids, mask = batch["input_ids"][:1, :-3], batch["attention_mask"][:1, :-3]
    with pytest.raises(ValueError, match="prompt 0: the image holds"):
        model(input_ids=ids[:, :], attention_mask=mask, images=batch["pixel_values"][1:2],
              image_sizes=batch["image_sizes"][1:2])


@pytest.mark.parametrize("layer", [-1, -2])
def test_the_siglip_adapter_stops_at_the_selected_layer(reference, batch, layer):
    """Features equal transformers' SiglipVisionModel hidden_states[layer] (before the post-layernorm)."""
    from llava.model.multimodal_encoder.siglip_encoder import SiglipVisionTower

    siglip = reference.model.vision_tower
    tower = SiglipVisionTower(siglip, select_layer=layer)
    pixels = batch["pixel_values"][0, :2]
    with torch.no_grad():
        expected = siglip(pixels, output_hidden_states=True).hidden_states[layer]
    torch.testing.assert_close(tower(pixels).features, expected, atol=1e-6, rtol=1e-6)
    assert tower.num_run_layers == siglip.config.num_hidden_layers + 1 + layer


def test_siglip_refuses_signals_that_need_the_cls_token(ov):
    from llava.model.multimodal_encoder.siglip_encoder import MissingSignalError

    tower = ov[1].get_vision_tower()
    with pytest.raises(MissingSignalError, match=r"\['cls_feature'\] need a \[CLS\] token, which SigLIP lacks"):
        tower(torch.zeros(1, 3, 384, 384), needs=frozenset({"cls_attn", "cls_feature"}))


def test_answers_metadata_reports_each_images_count_budget_and_unpruned_count(ov, batch):
    from llava.eval.runner import _visual_token_report

    model = ov[1]
    _generate(model, {k: v[:1] for k, v in batch.items()},
              PruningConfig(visual_token_num=64))
    (report,) = _visual_token_report(model.last_multimodal, model.config.num_hidden_layers)
    n_full = image_grid(SIZES[0], model.family_inputs.keywords["geometry"]).num_tokens
    k = report["visual_tokens"]
    assert report == {"visual_tokens": k, "prune_layers": [], "visual_tokens_after_layers": [],
                      "layer_averaged_visual_tokens": float(k), "visual_tokens_unpruned": n_full,
                      "visual_token_budget": 64}
    assert report["visual_tokens"] in (63, 64)


def test_an_in_llm_method_prunes_inside_the_qwen2_llm(ov, batch):
    model = ov[1]
    one = {k: v[:1] for k, v in batch.items()}
    _generate(model, one, PruningConfig(method="fastv", visual_token_num=64, method_args={"layer": 1}), 2)
    encoded = model.last_multimodal
    n_full = image_grid(SIZES[0], model.family_inputs.keywords["geometry"]).num_tokens
    assert encoded.token_counts == [n_full]  # every visual token enters the LLM ...
    assert encoded.in_llm["kept_after_layer"] == [64]  # ... and layer 1 keeps 64 of them


def test_one_tower_run_serves_several_budgets(ov, batch):
    model = ov[1]
    geometry = model.family_inputs.keywords["geometry"]
    one = {k: v[:1] for k, v in batch.items()}
    views = one["pixel_values"][0, :image_grid(SIZES[0], geometry).views]
    cfg = PruningConfig(method="fastervlm", visual_token_num=64)
    signals = model.vision_signals([views], pruning=cfg)
    for k in (64, 200):
        cfg = cfg.replace(visual_token_num=k)
        fresh = _generate(model, one, cfg, 2)
        kept = model.last_multimodal.kept_indices
        reused = model.generate(inputs=one["input_ids"], attention_mask=one["attention_mask"], vision_signals=signals,
                                image_sizes=one["image_sizes"], pruning=cfg, max_new_tokens=2, do_sample=False)
        assert reused.tolist() == fresh.tolist()
        assert torch.equal(model.last_multimodal.kept_indices[0], kept[0])
    with pytest.raises(ValueError, match=r"the vision signals hold 10 views but images of sizes \[\(300, 500\)\] "
                                         r"need 3"):
        model.generate(inputs=one["input_ids"], attention_mask=one["attention_mask"], image_sizes=one["image_sizes"],
                       vision_signals=model.vision_signals(one["pixel_values"], pruning=cfg), pruning=cfg,
                       max_new_tokens=1)


IN_LLM_RUNS = {  # settings that fit the tiny Qwen2's 2 layers, per in-LLM method
    "fastv": PruningConfig("fastv", 64, method_args={"layer": 1}),
    "pdrop": PruningConfig("pdrop", method_args={"layers": (1,), "ratios": (0.5,)}),
    "dart": PruningConfig("dart", 64, method_args={"layer": 1}),
    "sparsevlm": PruningConfig("sparsevlm", 64, method_args={"layers": (0,), "keep": (66,)}),
    "fitprune": PruningConfig("fitprune", method_args={"removed": (100, 0)}),
}


@pytest.mark.parametrize("name", [n for n in list_methods() if get_method(n).stage == "in_llm"])
def test_every_in_llm_method_runs_inside_onevisions_qwen2_or_names_what_it_lacks(ov, batch, name):
    """Each in-LLM method prunes the image block inside the Qwen2 LLM (all tokens enter it)."""
    model, one = ov[1], {key: value[:1] for key, value in batch.items()}
    assert model.config.num_hidden_layers == 2
    cfg = IN_LLM_RUNS[name]
    _generate(model, one, cfg, 2)
    report = model.last_multimodal.in_llm
    assert report, name
    block = model.last_multimodal.token_counts[0]
    after = report["kept_per_stage"][0] if "kept_per_stage" in report else report["kept_after_layer"]
    assert all(0 < k < block for k in after), (name, block, after)


def test_position_mode_keep_gives_kept_tokens_and_newlines_their_unpruned_positions(ov, batch):
    """position_mode='keep': a kept token (newlines included) sits at the position of the same token in the unpruned
    layout, and the text after the image continues as unpruned; the default stays compact."""
    model = ov[1]
    full = model.prepare_multimodal_inputs(**_ours(model, batch), pruning=PruningConfig(position_mode="compact"))
    keep = PruningConfig(visual_token_num=64, position_mode="keep")
    pruned = model.prepare_multimodal_inputs(**_ours(model, batch), pruning=keep)
    for b in range(len(SIZES)):
        valid, full_valid = pruned.attention_mask[b].bool(), full.attention_mask[b].bool()
        pos, emb = pruned.position_ids[b][valid], pruned.inputs_embeds[b][valid]
        assert bool((pos.diff() > 0).all()) and pos[-1] == int(full_valid.sum()) - 1
        torch.testing.assert_close(emb, full.inputs_embeds[b][full_valid][pos], atol=1e-5, rtol=1e-5)
    compact = model.prepare_multimodal_inputs(**_ours(model, batch), pruning=keep.replace(position_mode=None))
    valid = compact.attention_mask[0].bool()
    assert compact.position_ids[0][valid].tolist() == list(range(int(valid.sum())))
