"""Numerical equivalence of our LLaVA path with transformers' own LlavaForConditionalGeneration and CLIP."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import CLIPVisionModel

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.hf_layout import to_hf_model
from llava.pruning import PruningConfig

QUESTIONS = ["What shapes are in the image?", "What does the text say?", "Is there a house?"]


def _ids(tokenizer, question: str) -> torch.Tensor:
    return tokenizer_image_token(build_prompt(question, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")


def _left_pad(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@pytest.fixture(scope="module")
def hf_model(tiny):
    return to_hf_model(tiny[1])


@pytest.fixture(scope="module")
def eager_clip(tiny):
    tower = tiny[1].get_vision_tower().vision_tower
    clip = CLIPVisionModel._from_config(copy.deepcopy(tower.config), attn_implementation="eager")
    clip.load_state_dict(tower.state_dict())
    return clip.eval()


@pytest.fixture(scope="module")
def batch(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    rows = [_ids(tokenizer, q).tolist() for q in QUESTIONS[:2]]
    pixels = process_images(sample_images[:2], processor, model.config)
    return rows, pixels


def _hf_rows(rows, image_token_id, counts):
    """Expand each placeholder into `count` image tokens, as the HF processor would."""
    out = []
    it = iter(counts)
    for r in rows:
        row = []
        for t in r:
            row += [image_token_id] * next(it) if t == IMAGE_TOKEN_INDEX else [t]
        out.append(row)
    return out


def _eager_topk(eager_clip, pixels, k):
    """FasterVLM's rule from full eager attention maps: head-mean [CLS] row of layer -2, top-k, sorted."""
    att = eager_clip(pixels, output_attentions=True).attentions[-2]  # [B, H, T, T]
    scores = att[:, :, 0, 1:].mean(dim=1)  # [B, N]
    return torch.topk(scores, k, dim=-1).indices.sort(dim=-1).values


def test_unpruned_logits_and_greedy_match_hf(tiny, hf_model, batch):
    model = tiny[1]
    assert not model.pruning.prunes  # the loader's default keeps every token
    rows, pixels = batch
    ids, mask = _left_pad(rows)
    ours = model(input_ids=ids, attention_mask=mask, images=pixels).logits
    img_id = hf_model.config.image_token_id
    expanded = _hf_rows(rows, img_id, [576, 576])
    # Our forward pads the spliced rows on the right (LLaVA's training side): give HF the same layout.
    width = max(map(len, expanded))
    right_ids = torch.tensor([r + [0] * (width - len(r)) for r in expanded])
    right_mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in expanded])
    theirs = hf_model(input_ids=right_ids, attention_mask=right_mask, pixel_values=pixels).logits
    for b, row in enumerate(expanded):
        n = len(row)
        torch.testing.assert_close(ours[b, :n], theirs[b, :n, : model.config.vocab_size], atol=1e-5, rtol=1e-5)
    hf_ids, hf_mask = _left_pad(expanded)

    ours_gen = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=12, do_sample=False)
    theirs_gen = hf_model.generate(input_ids=hf_ids, attention_mask=hf_mask, pixel_values=pixels,
                                   max_new_tokens=12, do_sample=False)[:, hf_ids.shape[1]:]
    assert ours_gen.tolist() == theirs_gen.tolist()
    assert len(set(ours_gen[0].tolist())) > 3, "the tiny model should not be degenerate"


def test_cls_attention_equals_eager_reference(tiny, eager_clip, batch):
    tower = tiny[1].get_vision_tower()
    _, pixels = batch
    ref = eager_clip(pixels, output_attentions=True, output_hidden_states=True)
    sig = tower(pixels, needs={"cls_attn", "cls_attn_layers", "keys"})
    torch.testing.assert_close(sig.cls_attn, ref.attentions[-2][:, :, 0, 1:].mean(1), atol=1e-6, rtol=1e-5)
    # Features come from the tower's own (SDPA) layers: compare with the full tower run to the end.
    full = tower.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(sig.features, full, atol=0, rtol=0)
    torch.testing.assert_close(sig.features, ref.hidden_states[-2][:, 1:], atol=1e-4, rtol=1e-4)  # eager vs SDPA
    layers = torch.stack([a[:, :, 0, 1:].mean(1) for a in ref.attentions[: tower.num_run_layers]], dim=1)
    torch.testing.assert_close(sig.cls_attn_layers, layers, atol=1e-6, rtol=1e-5)
    assert sig.keys.shape == (2, 576, tower.hidden_size // tower.config.num_attention_heads)


def test_tower_stops_at_selected_layer_and_keeps_no_maps(tiny, batch):
    tower = tiny[1].get_vision_tower()
    _, pixels = batch
    calls = []
    handles = [layer.register_forward_hook(lambda m, i, o, n=n: calls.append(n))
               for n, layer in enumerate(tower.vision_tower.encoder.layers)]
    try:
        sig = tower(pixels, needs={"cls_attn"})
    finally:
        for h in handles:
            h.remove()
    assert calls == list(range(tower.vision_tower.config.num_hidden_layers - 1))  # layer -1 never runs
    assert tower.vision_tower.config._attn_implementation == "sdpa"
    assert sig.cls_attn.shape == (2, 576) and sig.cls_attn_layers is None and sig.keys is None


@pytest.mark.parametrize("k", [144, 58, 29])
def test_pruned_path_equals_hf_fed_kept_features(tiny, hf_model, eager_clip, batch, k):
    model = tiny[1]
    pruning = PruningConfig(visual_token_num=k)
    rows, pixels = batch
    keep = _eager_topk(eager_clip, pixels, k)  # [B, K], independent of our selector
    feats = hf_model.model.get_image_features(pixel_values=pixels).pooler_output  # B x [576, H], all projected
    embed = hf_model.get_input_embeddings()
    seqs = []
    for b, row in enumerate(rows):
        pos = row.index(IMAGE_TOKEN_INDEX)
        text = embed(torch.tensor([t for t in row if t != IMAGE_TOKEN_INDEX]))
        seqs.append(torch.cat([text[:pos], feats[b][keep[b]], text[pos:]]))
    width = max(s.shape[0] for s in seqs)
    ref_embeds = torch.zeros(len(seqs), width, seqs[0].shape[-1])
    ref_mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for b, s in enumerate(seqs):
        ref_embeds[b, width - s.shape[0]:] = s
        ref_mask[b, width - s.shape[0]:] = 1
    ref_logits = hf_model(inputs_embeds=ref_embeds, attention_mask=ref_mask,
                          position_ids=(ref_mask.cumsum(-1) - 1).clamp(min=0)).logits[..., : model.config.vocab_size]

    ids, mask = _left_pad(rows)
    projector_inputs = []
    hook = model.mm_projector.register_forward_hook(lambda m, i, o: projector_inputs.append(i[0].shape))
    try:
        mm = model.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=pruning)
    finally:
        hook.remove()
    assert projector_inputs == [torch.Size([2, k, tiny[1].config.mm_hidden_size])]  # only kept tokens projected
    assert [t.tolist() for t in mm.encoded.kept_indices] == keep.tolist()
    ours = model(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask, position_ids=mm.position_ids).logits
    torch.testing.assert_close(ours, ref_logits, atol=1e-5, rtol=1e-5)

    ours_gen = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=8, do_sample=False,
                              pruning=pruning)
    ref_gen = hf_model.generate(inputs_embeds=ref_embeds, attention_mask=ref_mask, max_new_tokens=8, do_sample=False)
    assert ours_gen.tolist() == ref_gen[:, -ours_gen.shape[1]:].tolist()


def test_batch_equals_one_by_one_with_per_image_budgets(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    budgets = [None, 58, 29]
    rows = [_ids(tokenizer, q).tolist() for q in QUESTIONS]
    pixels = process_images(sample_images, processor, model.config)
    ids, mask = _left_pad(rows)
    batched = model.generate(ids, images=pixels, attention_mask=mask, visual_token_num=budgets,
                             max_new_tokens=10, do_sample=False)
    assert model.last_multimodal.token_counts == [576, 58, 29]
    for b, k in enumerate(budgets):
        single = model.generate(torch.tensor([rows[b]]), images=pixels[b:b + 1], visual_token_num=k,
                                max_new_tokens=10, do_sample=False)
        assert batched[b, : single.shape[1]].tolist() == single[0].tolist()


def test_several_images_in_one_prompt_with_different_budgets(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    prompt = build_prompt("<image>\nCompare the two images.", "vicuna_v1", True)
    ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    assert int((ids == IMAGE_TOKEN_INDEX).sum()) == 2
    pixels = process_images(sample_images[:2], processor, model.config)
    mm = model.prepare_multimodal_inputs(ids, pixels, visual_token_num=[58, 144])
    n_text = int((ids != IMAGE_TOKEN_INDEX).sum())
    assert mm.inputs_embeds.shape[1] == n_text + 58 + 144
    (s1, e1), (s2, e2) = mm.image_spans[0]
    assert (e1 - s1, e2 - s2) == (58, 144) and e1 <= s2
    with pytest.raises(ValueError, match="2 <image> placeholders but 1 images"):
        model.prepare_multimodal_inputs(ids, pixels[:1])


def test_forward_with_labels_returns_the_loss(tiny, batch):
    model = tiny[1]
    rows, pixels = batch
    ids = torch.tensor([rows[0]])
    labels = ids.clone()
    labels[ids == IMAGE_TOKEN_INDEX] = -100
    labels[0, :5] = -100
    out = model(input_ids=ids, images=pixels[:1], labels=labels, pruning=PruningConfig(visual_token_num=58))
    pos = rows[0].index(IMAGE_TOKEN_INDEX)
    full = torch.cat([labels[0, :pos], torch.full((58,), -100), labels[0, pos + 1:]])
    ref = torch.nn.functional.cross_entropy(out.logits[0, :-1], full[1:], ignore_index=-100)
    assert out.loss is not None
    torch.testing.assert_close(out.loss, ref)


@pytest.mark.parametrize("k", [576, 1000])
def test_budget_at_or_above_n_keeps_everything(tiny, batch, k):
    model = tiny[1]
    rows, pixels = batch
    ids = torch.tensor([rows[0]])
    ref = model(input_ids=ids, images=pixels[:1], pruning=PruningConfig()).logits
    pruned = model(input_ids=ids, images=pixels[:1], pruning=PruningConfig(visual_token_num=k)).logits
    torch.testing.assert_close(pruned, ref, atol=0, rtol=0)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "58", True])
def test_bad_budgets_raise_naming_the_value(tiny, bad):
    model = tiny[1]
    before = model.pruning
    with pytest.raises(ValueError, match=repr(bad) if not isinstance(bad, int) or isinstance(bad, bool) else str(bad)):
        model.set_pruning(bad)
    assert model.pruning is before  # a refused value changes nothing


def test_budget_changes_without_reloading(tiny, batch):
    model = tiny[1]
    rows, pixels = batch
    ids = torch.tensor([rows[0]])
    default = model.pruning
    with model.pruning_config(PruningConfig()):  # set_pruning inside the block; restored on exit
        for k, expected in [(29, 29), (58, 58), (None, 576)]:
            model.set_pruning(k)
            model.generate(ids, images=pixels[:1], max_new_tokens=1, do_sample=False)
            assert model.last_multimodal.token_counts == [expected]
        assert model.set_pruning(64, method="uniform") == PruningConfig("uniform", 64)
        model.generate(ids, images=pixels[:1], max_new_tokens=1, do_sample=False)
        assert model.last_multimodal.token_counts == [64]
        with pytest.raises(ValueError, match="unknown pruning method 'nope'"):
            model.set_pruning(29, method="nope")
    assert model.pruning is default


def test_precomputed_signals_give_the_same_answers(tiny, batch):
    model = tiny[1]
    assert not model.pruning.prunes
    rows, pixels = batch
    ids, mask = _left_pad(rows)
    signals = model.vision_signals(pixels, needs=frozenset({"cls_attn"}))
    for k in (None, 144, 29):
        direct = model.generate(ids, images=pixels, attention_mask=mask, visual_token_num=k, max_new_tokens=6,
                                do_sample=False)
        reused = model.generate(ids, attention_mask=mask, vision_signals=signals, visual_token_num=k,
                                max_new_tokens=6, do_sample=False)
        assert direct.tolist() == reused.tolist()
