"""Qwen2.5-VL on the platform against transformers' own Qwen2_5_VLForConditionalGeneration.

The tiny checkpoint (real geometry: 14 px patches, 2 x 2 merge, 112 px windows, full-attention blocks
1 and 3, M-RoPE sections 2:3:3) is written by transformers' classes and read back by both sides. The
images span several windows and aspect ratios, so the window reordering and its reversal are exercised.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

from llava.model import qwen_layout
from llava.model.builder import load_pretrained_model
from llava.model.family_qwen2_5_vl import save_tiny_qwen2_5_vl
from llava.pruning import PruningConfig, get_method, list_methods

# (height, width): tall, wide, square; each covers 2 x 2 or 2 x 3 windows of 8 x 8 patches.
SIZES = [(224, 168), (140, 280), (196, 196)]
PRE_LLM = [m for m in list_methods() if get_method(m).stage == "pre_llm"]


@pytest.fixture(scope="module")
def q_path(tmp_path_factory):
    return str(save_tiny_qwen2_5_vl(tmp_path_factory.mktemp("q25") / "tiny"))


@pytest.fixture(scope="module")
def qwen(q_path):
    tokenizer, model, processor, _ = load_pretrained_model(q_path, device="cpu")
    return tokenizer, model, processor


@pytest.fixture(scope="module")
def reference(q_path):
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(q_path).eval()


def _batch(processor, side: str, sizes=SIZES, question: str = "what is here ?"):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    questions = [question, "describe this image", "what is the image ?"][:len(sizes)]
    texts = [processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                          {"type": "text", "text": q}]}],
                                           add_generation_prompt=True) for q in questions]
    processor.tokenizer.padding_side = side
    return processor(images=images, text=texts, return_tensors="pt", padding=True)


@pytest.fixture(scope="module")
def batch(qwen):
    return _batch(qwen[2], "left")


def _generate(model, b, **kwargs):
    return model.generate(inputs=b["input_ids"], attention_mask=b["attention_mask"], images=b["pixel_values"],
                          image_grid_thw=b["image_grid_thw"], **kwargs)


def _logits(model, b, **kwargs):
    return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], images=b["pixel_values"],
                 image_grid_thw=b["image_grid_thw"], **kwargs).logits


def _row(b, i):
    """Prompt row i alone (its padding dropped) with its own image."""
    m = b["attention_mask"][i].bool()
    grid = b["image_grid_thw"]
    counts = grid.prod(dim=1).tolist()
    start = sum(counts[:i])
    return {"input_ids": b["input_ids"][i:i + 1, m], "attention_mask": b["attention_mask"][i:i + 1, m],
            "pixel_values": b["pixel_values"][start:start + counts[i]], "image_grid_thw": grid[i:i + 1]}


def test_the_images_cover_several_windows_and_aspect_ratios(batch):
    grids = batch["image_grid_thw"].tolist()
    assert grids == [[1, 16, 12], [1, 10, 20], [1, 14, 14]]  # patches; merged: 8 x 6, 5 x 10, 7 x 7


@pytest.mark.parametrize("side", ["left", "right"])
def test_logits_equal_transformers_on_a_batch_of_sizes(qwen, reference, side):
    b = _batch(qwen[2], side)
    ours = _logits(qwen[1], b)  # left-padded
    with torch.no_grad():
        theirs = reference(**b).logits
    mask = b["attention_mask"].bool()
    ours_mask = torch.zeros_like(mask)
    for i in range(mask.shape[0]):  # ours are left-padded whatever the input's side
        ours_mask[i, mask.shape[1] - int(mask[i].sum()):] = True
    diff = (ours[ours_mask] - theirs[mask]).abs().max().item()
    assert diff <= 1e-5, diff


def test_greedy_tokens_equal_transformers(qwen, reference, batch):
    ours = _generate(qwen[1], batch, max_new_tokens=6)
    theirs = reference.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1]:]
    assert ours.tolist() == theirs.tolist()


def test_the_adapter_features_equal_the_stock_vit(qwen, reference, batch):
    tower = qwen[1].get_vision_tower()
    ours = tower(batch["pixel_values"], batch["image_grid_thw"])
    with torch.no_grad():
        stock = reference.model.visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    assert ours.counts == [48, 50, 49] and ours.grids == [(8, 6), (5, 10), (7, 7)]
    merged = torch.cat([tower.project(s.features[0]) for s in ours.signals])
    torch.testing.assert_close(merged, stock.pooler_output, atol=1e-6, rtol=0)
    # the group features are the last block's outputs, taken back from window order to raster order
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(batch["image_grid_thw"], 2, 112, 14)
    groups = stock.last_hidden_state.view(-1, 4 * 32)[torch.argsort(window_index)]
    torch.testing.assert_close(torch.cat([s.features[0] for s in ours.signals]), groups, atol=1e-6, rtol=0)


def _reference_mean_attn(reference, batch, layer: int) -> list[torch.Tensor]:
    """Received attention per merged token from the stock block's own inputs, with full softmax maps."""
    visual = reference.model.visual
    seen = {}

    def grab(_module, args, kwargs):
        seen["x"], seen["cu"], seen["rope"] = args[0], kwargs["cu_seqlens"], kwargs["position_embeddings"]

    handle = visual.blocks[layer].attn.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        visual(batch["pixel_values"], grid_thw=batch["image_grid_thw"])
    handle.remove()
    attn = visual.blocks[layer].attn
    x, cu = seen["x"], seen["cu"].tolist()
    q, k, _ = attn.qkv(x).reshape(x.shape[0], 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, *seen["rope"])  # [P, heads, Dh]
    images = torch.as_tensor([0] + (batch["image_grid_thw"].prod(dim=1)).cumsum(0).tolist())
    received = torch.zeros(x.shape[0])
    for s, e in zip(cu[:-1], cu[1:]):  # the block's own segments (windows or images)
        probs = torch.einsum("qhd,khd->hqk", q[s:e], k[s:e]).mul(attn.scaling).softmax(dim=-1)  # [heads, n, n]
        image_len = int(images[(images > s).nonzero()[0]] - images[(images <= s).nonzero()[-1]])
        received[s:e] = probs.sum(dim=(0, 1)) / (attn.num_heads * image_len)
    from transformers.vision_utils import get_vision_window_index

    window_index, _ = get_vision_window_index(batch["image_grid_thw"], 2, 112, 14)
    per_group = received.view(-1, 4).sum(dim=-1)[torch.argsort(window_index)]  # raster order
    return list(per_group.split((batch["image_grid_thw"].prod(dim=1) // 4).tolist()))


@pytest.mark.parametrize("layer", [3, 1, 0])  # default (last full-attention block), earlier full block, a window block
def test_mean_attn_is_the_received_attention_of_the_chosen_block(qwen, reference, batch, layer):
    tower = qwen[1].get_vision_tower()
    if layer == 3:
        assert tower.signal_layer == 3 and tower.full_attention
    previous = tower.signal_layer
    tower.signal_layer = layer
    try:
        ours = tower(batch["pixel_values"], batch["image_grid_thw"], needs={"mean_attn"})
    finally:
        tower.signal_layer = previous
    expected = _reference_mean_attn(reference, batch, layer)
    for sig, ref in zip(ours.signals, expected):
        torch.testing.assert_close(sig.mean_attn[0], ref, atol=1e-6, rtol=1e-5)
        assert abs(sig.mean_attn.sum().item() - 1.0) < 1e-5


def test_kept_tokens_keep_their_unpruned_position_ids(qwen, reference, batch):
    model = qwen[1]
    ids, mask = batch["input_ids"], batch["attention_mask"]
    stock, deltas = reference.model.get_rope_index(ids, batch["mm_token_type_ids"], batch["image_grid_thw"],
                                                   attention_mask=mask)
    mm = model.prepare_multimodal_inputs(ids, mask, batch["pixel_values"], batch["image_grid_thw"],
                                         pruning=PruningConfig(visual_token_num=20))
    image_id = model.image_token_id
    for b in range(ids.shape[0]):
        valid = mask[b].bool()
        row_ids, row_pos = ids[b][valid], stock[:, b][:, valid]
        keep = torch.ones_like(row_ids, dtype=torch.bool)
        run = (row_ids == image_id).nonzero().flatten()
        kept = mm.encoded.kept_indices[b]
        assert len(kept) == 20
        keep[run] = False
        keep[run[kept]] = True
        n = int(keep.sum())
        ours = mm.position_ids[:, b, -n:]
        assert mm.attention_mask[b].sum() == n
        assert torch.equal(ours, row_pos[:, keep])
        # kept image tokens sit at (s, s + row, s + col) of their merged grid; the text after continues as unpruned
        h, w = mm.encoded.grids[b]
        s = int(row_pos[0, run[0]])
        at = keep.cumsum(0)[run[kept]] - 1  # where the kept image tokens sit in the pruned row
        assert torch.equal(ours[:, at], torch.stack([torch.full_like(kept, s), s + kept // w, s + kept % w]))
        # generation continues each row at the stock model's next position (its rope delta)
        assert int(qwen_layout.next_positions(mm.position_ids, mm.attention_mask)[b]) == int(valid.sum() + deltas[b])


def test_compact_positions_renumber_pruned_images_only(qwen, batch):
    model = qwen[1]
    args = (batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["image_grid_thw"])
    keep = model.prepare_multimodal_inputs(*args, visual_token_num=[20, None, 20],
                                           pruning=PruningConfig(position_mode="keep"))
    compact = model.prepare_multimodal_inputs(*args, visual_token_num=[20, None, 20],
                                              pruning=PruningConfig(position_mode="compact"))
    assert torch.equal(keep.inputs_embeds, compact.inputs_embeds)
    assert torch.equal(compact.position_ids[:, 1], keep.position_ids[:, 1])  # the unpruned image keeps its layout
    for b in (0, 2):
        s, e = compact.image_spans[b][0]
        start = int(keep.position_ids[0, b, s])
        pos = compact.position_ids[:, b]
        assert torch.equal(pos[:, s:e], torch.arange(start, start + 20).expand(3, -1))  # 1-D, consecutive
        assert torch.equal(pos[:, e:], torch.arange(start + 20, start + 20 + pos.shape[1] - e).expand(3, -1))
        assert torch.equal(pos[:, :s], keep.position_ids[:, b, :s])
    full = dict(pruning=PruningConfig(position_mode="compact"))  # nothing pruned: the stock layout
    assert torch.equal(model.prepare_multimodal_inputs(*args, **full).position_ids,
                       model.prepare_multimodal_inputs(*args).position_ids)
    with pytest.raises(ValueError, match="position_mode must be one of"):
        PruningConfig(position_mode="dense")


def test_visual_token_num_caps_every_image_and_records_counts(qwen, batch):
    model = qwen[1]
    out = _generate(model, batch, max_new_tokens=3, pruning=PruningConfig(visual_token_num=30))
    enc = model.last_multimodal
    assert out.shape[0] == 3
    assert enc.token_counts == [30, 30, 30]
    assert enc.unpruned_counts == [48, 50, 49] and enc.budgets == [30, 30, 30]
    assert all(len(k) == 30 and torch.equal(k, k.sort().values) for k in enc.kept_indices)
    _generate(model, batch, max_new_tokens=1, pruning=PruningConfig(visual_token_num=49))
    assert model.last_multimodal.token_counts == [48, 49, 49]  # an image with N_i <= K keeps everything
    assert model.last_multimodal.kept_indices[0] is None
    _generate(model, batch, max_new_tokens=1, pruning=PruningConfig(ratio=0.5))
    assert model.last_multimodal.budgets == [24, 25, 24]  # PruningConfig.budget(N_i) per image
    assert model.last_multimodal.token_counts == [24, 25, 24]


def test_bad_budgets_are_refused(qwen, batch):
    with pytest.raises(ValueError, match="visual_token_num must be >= 1"):
        _generate(qwen[1], batch, max_new_tokens=1, visual_token_num=0)
    with pytest.raises(ValueError, match="got 2 visual_token_num values for 3 images"):
        _generate(qwen[1], batch, max_new_tokens=1, visual_token_num=[4, 5])
    with pytest.raises(ValueError, match="image_grid_thw"):
        qwen[1].generate(inputs=batch["input_ids"], attention_mask=batch["attention_mask"],
                         images=batch["pixel_values"], max_new_tokens=1)


def test_a_budget_covering_every_image_gives_the_unpruned_logits(qwen, batch):
    full = _logits(qwen[1], batch)
    covered = _logits(qwen[1], batch, pruning=PruningConfig(visual_token_num=50))
    assert qwen[1].last_multimodal.kept_indices == [None, None, None]
    torch.testing.assert_close(covered, full, atol=0, rtol=0)


def test_fastervlm_keeps_the_top_k_merged_tokens_by_mean_attention(qwen, batch):
    model = qwen[1]
    signals = model.vision_signals(batch["pixel_values"], batch["image_grid_thw"], needs={"mean_attn"})
    _generate(model, batch, max_new_tokens=1, pruning=PruningConfig(method="fastervlm", visual_token_num=10))
    for sig, kept in zip(signals.signals, model.last_multimodal.kept_indices):
        top = torch.sort(sig.mean_attn[0], descending=True, stable=True).indices[:10].sort().values
        assert torch.equal(kept, top)


def test_kept_tokens_are_the_unpruned_models_tokens(qwen, batch):
    model = qwen[1]
    full = model.encode_images(batch["pixel_values"], batch["image_grid_thw"], None)
    for method in ("fastervlm", "divprune"):
        pruned = model.encode_images(batch["pixel_values"], batch["image_grid_thw"],
                                     pruning=PruningConfig(method=method, visual_token_num=12))
        for f, p, kept in zip(full.features, pruned.features, pruned.kept_indices):
            torch.testing.assert_close(p, f[kept], atol=1e-6, rtol=0)  # the merger ran on the kept groups only


@pytest.mark.parametrize("name", PRE_LLM)
def test_every_pre_llm_method_runs_or_names_what_it_lacks(qwen, batch, name):
    model = qwen[1]
    cfg = PruningConfig(method=name, visual_token_num=16)
    needs = get_method(name).needs
    if {"cls_feature", "cls_attn_layers", "keys", "text_relevance"} & needs:
        with pytest.raises(ValueError, match=rf"pruning method '{name}' cannot run on qwen2_5_vl: signal") as err:
            _generate(model, batch, max_new_tokens=1, pruning=cfg)
        assert "\n" not in str(err.value)
        return
    out = _generate(model, batch, max_new_tokens=2, pruning=cfg)
    assert out.shape[0] == 3
    assert model.last_multimodal.token_counts == [16, 16, 16]


def test_batched_pruned_generation_equals_one_by_one(qwen, batch):
    model = qwen[1]
    cfg = PruningConfig(method="fastervlm", visual_token_num=20)
    batched = _generate(model, batch, max_new_tokens=5, pruning=cfg)
    for i in range(3):
        single = _row(batch, i)
        out = model.generate(inputs=single["input_ids"], attention_mask=single["attention_mask"],
                             images=single["pixel_values"], image_grid_thw=single["image_grid_thw"], pruning=cfg,
                             max_new_tokens=5)
        assert out[0].tolist() == batched[i, :out.shape[1]].tolist()


def test_a_mismatched_prompt_is_refused(qwen, batch):
    short = dict(batch)
    short["image_grid_thw"] = torch.tensor([[1, 16, 12], [1, 10, 20], [1, 14, 12]])
    with pytest.raises(ValueError, match="prompt 2: image 2 holds 49 pad tokens but its grid gives 42"):
        qwen[1].prepare_multimodal_inputs(short["input_ids"], short["attention_mask"], None, short["image_grid_thw"],
                                          visual_token_num=None)


def test_the_llava_layouts_refuse_position_mode_keep(tiny):
    model = tiny[1]
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="position_mode='keep' is not supported by the LLaVA layouts"):
        model.prepare_multimodal_inputs(ids, None, pruning=PruningConfig(position_mode="keep"))
    assert model.prepare_multimodal_inputs(ids, None, pruning=PruningConfig(position_mode="compact")) \
        .position_ids.tolist() == [[0, 1, 2]]


def test_the_signal_layer_is_checked_and_defaults_to_the_last_full_attention_block(qwen):
    tower = qwen[1].get_vision_tower()
    assert tower.signal_layer == tower.vision_tower.fullatt_block_indexes[-1] == 3
    with pytest.raises(ValueError, match=r"signal_layer=4 must be a block index in \[-4, 4\)"):
        tower.signal_layer = 4
    tower.signal_layer = -2
    assert tower.signal_layer == 2 and not tower.full_attention
    tower.signal_layer = None
    assert tower.signal_layer == 3


def test_the_llm_loop_takes_mrope_positions_and_gives_the_stock_logits(qwen, reference, batch):
    from llava.model.llm_loop import LLMLoop
    from llava.model.llm_loop import generate as loop_generate

    model = qwen[1]
    mm = model.prepare_multimodal_inputs(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                         batch["image_grid_thw"], visual_token_num=20)
    args = (mm.inputs_embeds, mm.attention_mask, mm.position_ids)  # position_ids [3, B, T]
    stock = qwen_layout.MRopeLoop(model.language_model, model.lm_head).prefill(*args)
    ours = LLMLoop(model.language_model, model.lm_head).prefill(*args)
    torch.testing.assert_close(ours, stock, atol=1e-6, rtol=0)
    tokens = loop_generate(LLMLoop(model.language_model, model.lm_head), *args, model.generation_config,
                           max_new_tokens=5)
    assert tokens.tolist() == _generate(model, batch, max_new_tokens=5, visual_token_num=20).tolist()


IN_LLM_RUNS = {  # settings that fit the tiny LLM's 2 layers; None: refused on M-RoPE (renumbers positions)
    "fastv": PruningConfig("fastv", 16, method_args={"layer": 1}),
    "pdrop": PruningConfig("pdrop", method_args={"layers": (1,), "ratios": (0.5,), "positions": "keep"}),
    "dart": PruningConfig("dart", 16, method_args={"layer": 1}),
    "sparsevlm": None,
    "fitprune": PruningConfig("fitprune", method_args={"removed": (20, 0)}),
}


@pytest.mark.parametrize("name", [n for n in list_methods() if get_method(n).stage == "in_llm"])
def test_every_in_llm_method_runs_inside_the_mrope_llm_or_names_what_it_lacks(qwen, batch, name):
    model = qwen[1]
    cfg = IN_LLM_RUNS[name]
    if cfg is None:
        with pytest.raises(ValueError, match=rf"pruning method '{name}' renumbers the surviving tokens' positions "
                                             r"inside the LLM, which qwen2_5_vl does not support yet"):
            _generate(model, batch, max_new_tokens=1,
                      pruning=PruningConfig(name, 16, method_args={"layers": (0,), "keep": (18,)}))
        return
    out = _generate(model, batch, max_new_tokens=2, pruning=cfg)
    assert out.shape[0] == 3
    enc = model.last_multimodal
    assert enc.token_counts == [48, 50, 49]  # every token enters the LLM
    after = enc.in_llm["kept_after_layer"]
    assert all(0 < k < n for k, n in zip(after, enc.token_counts)), after


def test_pdrop_renumbering_is_refused_and_fastv_batch_equals_one_by_one(qwen, batch):
    model = qwen[1]
    with pytest.raises(ValueError, match=r"'pdrop' renumbers .* \(pdrop: positions=keep\)"):
        _generate(model, batch, max_new_tokens=1,
                  pruning=PruningConfig("pdrop", method_args={"layers": (1,), "ratios": (0.5,)}))
    cfg = PruningConfig("fastv", 16, method_args={"layer": 1})
    batched = _generate(model, batch, max_new_tokens=4, pruning=cfg)
    assert model.last_multimodal.in_llm["kept_after_layer"] == [16, 16, 16]
    for i in range(3):
        single = _row(batch, i)
        out = model.generate(inputs=single["input_ids"], attention_mask=single["attention_mask"],
                             images=single["pixel_values"], image_grid_thw=single["image_grid_thw"], pruning=cfg,
                             max_new_tokens=4)
        assert out[0].tolist() == batched[i, :out.shape[1]].tolist()


def test_one_vit_run_serves_several_budgets(qwen, batch):
    model = qwen[1]
    cfg = PruningConfig(method="vispruner", visual_token_num=10)
    signals = model.vision_signals(batch["pixel_values"], batch["image_grid_thw"], pruning=cfg)
    for k in (10, 30):
        fresh = _generate(model, batch, max_new_tokens=3, pruning=cfg.replace(visual_token_num=k))
        kept = model.last_multimodal.kept_indices
        reused = model.generate(inputs=batch["input_ids"], attention_mask=batch["attention_mask"],
                                image_grid_thw=batch["image_grid_thw"], vision_signals=signals,
                                pruning=cfg.replace(visual_token_num=k), max_new_tokens=3)
        assert reused.tolist() == fresh.tolist()
        assert all(torch.equal(a, b) for a, b in zip(model.last_multimodal.kept_indices, kept))
    with pytest.raises(ValueError, match=r"the vision signals lack \['projected'\], which 'divprune' needs"):
        model.generate(inputs=batch["input_ids"], attention_mask=batch["attention_mask"],
                       image_grid_thw=batch["image_grid_thw"], vision_signals=signals,
                       pruning=PruningConfig(method="divprune", visual_token_num=10), max_new_tokens=1)


def test_a_prompt_with_two_images_and_a_text_only_row(qwen, reference):
    processor, model = qwen[2], qwen[1]
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(168, 224), (112, 112)]]
    two = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                        {"type": "text", "text": "what is this ?"}]}]
    none = [{"role": "user", "content": [{"type": "text", "text": "what is here ?"}]}]
    texts = [processor.apply_chat_template(t, add_generation_prompt=True) for t in (two, none)]
    processor.tokenizer.padding_side = "left"
    b = processor(images=images, text=texts, return_tensors="pt", padding=True)
    ours = _logits(model, b)
    with torch.no_grad():
        theirs = reference(**b).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)  # the same left-padded layout
    pruned = model.prepare_multimodal_inputs(b["input_ids"], b["attention_mask"], b["pixel_values"],
                                             b["image_grid_thw"], visual_token_num=5)
    assert model.last_multimodal is not None and pruned.encoded.token_counts == [5, 5]
    assert [e - s for s, e in pruned.image_spans[0]] == [5, 5] and pruned.image_spans[1] == []
