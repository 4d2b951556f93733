"""The analyses' numbers equal those computed directly from full eager attention maps.

The reference runs the tiny model with attn_implementation="eager" and output_attentions=True on the
spliced inputs, and CLIP with eager attention, then computes every aggregate from the [H, T, T] maps.
The analyses themselves ran with SDPA and rebuilt only the rows they need from hooked q/k.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPVisionModel

from llava.analysis.attention import measure_llm_layers, run_prefill
from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model

from analysis_helpers import MEASURED, RECORDS, SAMPLES

KINDS = ("all_queries", "image_queries", "text_queries", "last_token")


def _inputs(tokenizer, processor, config, record):
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], record["conversations"][0]["value"])
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
    pixels = process_images([Image.open(SAMPLES / record["image"]).convert("RGB")], processor, config)
    return ids, pixels


def _aggregates(maps: torch.Tensor, start: int, end: int) -> dict[str, np.ndarray]:
    """The four aggregates from full head-mean maps [L, T, T] of one unpadded row."""
    t = maps.shape[-1]
    j = torch.arange(start, end, dtype=maps.dtype)
    cols = maps[:, :, start:end]  # [L, T, N]; rows i < j are zero (causal)
    return {
        "all_queries": (cols.sum(1) / (t - j)).numpy(),
        "image_queries": (cols[:, start:end].sum(1) / (end - j)).numpy(),
        "text_queries": cols[:, end:].mean(1).numpy(),
        "last_token": cols[:, -1].numpy(),
    }


@pytest.fixture(scope="module")
def reference(tiny_path, tiny):
    """Per measured sample: the four aggregates [L, N] and the [CLS] row [N], from eager attention maps."""
    tokenizer, _, processor, _ = tiny
    _, eager, _, _ = load_pretrained_model(tiny_path, None, "llava-v1.5-tiny", device="cpu", torch_dtype="float32",
                                           attn_implementation="eager")
    assert not eager.pruning.prunes
    tower = eager.get_vision_tower().vision_tower
    clip = CLIPVisionModel._from_config(copy.deepcopy(tower.config), attn_implementation="eager")
    clip.load_state_dict(tower.state_dict())
    clip.eval()
    out = {}
    for record in (r for r in RECORDS if r["id"] in MEASURED):
        ids, pixels = _inputs(tokenizer, processor, eager.config, record)
        with torch.no_grad():
            mm = eager.prepare_multimodal_inputs(ids, pixels, visual_token_num=None)
            res = eager(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask,
                        position_ids=mm.position_ids, output_attentions=True)
            cls = clip(pixels, output_attentions=True).attentions[-2][0, :, 0, 1:].mean(0)  # layer -2, head mean
        maps = torch.stack(res.attentions)[:, 0].mean(1).double()  # L x [1, H, T, T] -> [L, T, T]
        ((start, end),) = mm.image_spans[0]
        assert end - start == 576
        out[record["id"]] = {**_aggregates(maps, start, end), "cls": cls.double().numpy()}
    return out


def test_attention_shift_equals_eager_maps(shift_run, reference):
    stats, _ = shift_run
    assert stats["num_samples"] == len(MEASURED)
    for kind in KINDS:
        expected = np.mean([reference[i][kind] for i in MEASURED], axis=0)  # [L, N]
        np.testing.assert_allclose(np.asarray(stats["llm"][kind]), expected, atol=1e-6, rtol=1e-4, err_msg=kind)
    expected_cls = np.mean([reference[i]["cls"] for i in MEASURED], axis=0)
    np.testing.assert_allclose(np.asarray(stats["cls_attn"]), expected_cls, atol=1e-6, rtol=1e-4)


def _ref_summary(scores: np.ndarray) -> dict[str, float]:
    """Dispersion numbers written out directly (independent of llava.analysis.stats)."""
    p = scores / scores.sum()
    top = np.sort(p)[::-1]
    running, k50, k90 = 0.0, None, None
    for k, v in enumerate(top, start=1):
        running += v
        if k50 is None and running >= 0.5 - 1e-9:
            k50 = k
        if k90 is None and running >= 0.9 - 1e-9:
            k90 = k
    return {"share_50": k50 / p.size, "share_90": k90 / p.size,
            "entropy": float(-(p * np.log(p)).sum() / np.log(p.size)), "top1": float(p.max()),
            "image_mass": float(scores.sum())}


def test_attention_dispersion_equals_eager_maps(dispersion_run, reference):
    stats, _ = dispersion_run
    layer = stats["layer"]
    rows = {r["id"]: r for r in stats["per_sample"]}
    assert sorted(rows) == sorted(MEASURED)
    for sid in MEASURED:
        for source, scores in (("llm", reference[sid]["last_token"][layer]), ("cls", reference[sid]["cls"])):
            for key, value in _ref_summary(scores).items():
                assert rows[sid][f"{source}_{key}"] == pytest.approx(value, abs=1e-5), (sid, source, key)
    for source in ("llm", "cls"):
        for key in ("share_50", "share_90", "entropy", "top1", "image_mass"):
            mean = np.mean([rows[s][f"{source}_{key}"] for s in MEASURED])
            assert stats["summary_mean"][source][key] == pytest.approx(mean, abs=1e-12)
        # the mean cumulative curve is the mean of the per-sample sorted cumulative shares
        refs = [reference[s]["last_token"][layer] if source == "llm" else reference[s]["cls"] for s in MEASURED]
        curves = [np.cumsum(np.sort(r / r.sum())[::-1]) for r in refs]
        np.testing.assert_allclose(stats["cumulative"][source], np.mean(curves, axis=0), atol=1e-5)


def test_left_padded_batch_equals_single_rows(tiny, sample_images):
    """Rows of different lengths, left-padded by the splice, measure the same as one at a time."""
    tokenizer, model, processor, _ = tiny
    prompts = [r for r in RECORDS if r["id"] in MEASURED]
    singles, ids_rows, pixels = [], [], []
    for record in prompts:
        ids, px = _inputs(tokenizer, processor, model.config, record)
        singles.append(run_prefill(model, ids, px, None, [1, 3], chunk=37)[0])
        ids_rows.append(ids[0])
        pixels.append(px)
    width = max(r.shape[0] for r in ids_rows)
    assert min(r.shape[0] for r in ids_rows) < width  # the batch really is padded
    ids = torch.zeros(len(ids_rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, r in enumerate(ids_rows):
        ids[b, : r.shape[0]], mask[b, : r.shape[0]] = r, 1
    batched = run_prefill(model, ids, torch.cat(pixels), mask, [1, 3], chunk=64)
    spliced_width = max(one.length for one in singles)
    for one, many in zip(singles, batched):
        assert many.length == one.length
        assert many.span[0] - one.span[0] == spliced_width - one.length  # shifted by its left padding
        torch.testing.assert_close(many.cls_attn, one.cls_attn, atol=1e-6, rtol=1e-5)
        assert sorted(many.layers) == [1, 3]
        for layer in (1, 3):
            for kind in KINDS:
                torch.testing.assert_close(getattr(many.layers[layer], kind), getattr(one.layers[layer], kind),
                                           atol=1e-6, rtol=1e-4)


def test_gqa_rotary_and_padding_equal_eager(tiny):
    """A grouped-query LLM (2 key heads for 4 query heads), left padding and a span mid-sequence."""
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
    from llava.model.tiny import tiny_config

    config = tiny_config(vocab_size=64)
    config.num_key_value_heads = 2
    config.vision_config = None
    config.mm_hidden_size = None
    torch.manual_seed(0)
    config._attn_implementation = "sdpa"
    sdpa = LlavaLlamaForCausalLM(config).eval()
    eager_config = copy.deepcopy(config)
    eager_config._attn_implementation = "eager"
    eager = LlavaLlamaForCausalLM(eager_config).eval()
    eager.load_state_dict(sdpa.state_dict())

    b, t, pad, span = 2, 90, 7, (20, 56)
    embeds = torch.randn(b, t, config.hidden_size)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[1, :pad] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    spans = [span, (span[0] + pad, span[1] + pad)]
    per_row = measure_llm_layers(sdpa.get_model(), embeds, mask, positions, spans, range(4), chunk=16)
    got = {layer: [per_row[r][layer] for r in range(b)] for layer in range(4)}
    with torch.no_grad():
        ref = eager.get_model()(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                                output_attentions=True, use_cache=False).attentions
    for layer in range(4):
        for r in range(b):
            maps = ref[layer][r].mean(0).double()  # [T, T]
            valid = mask[r].bool()
            start, end = spans[r]
            j = torch.arange(start, end)
            n_valid_after = torch.tensor([int(valid[i:].sum()) for i in j])
            cols = maps[:, start:end] * valid[:, None]  # padding query rows do not count
            expected = {
                "all_queries": cols.sum(0) / n_valid_after,
                "image_queries": cols[start:end].sum(0) / (end - j),
                "text_queries": cols[end:].sum(0) / int(valid[end:].sum()),
                "last_token": maps[-1, start:end],
            }
            for kind, value in expected.items():
                torch.testing.assert_close(getattr(got[layer][r], kind).double(), value, atol=1e-6, rtol=1e-4,
                                           msg=f"layer {layer} row {r} {kind}")


@pytest.fixture(scope="module")
def model16(tiny_path):
    return load_pretrained_model(tiny_path, None, "llava-v1.5-tiny", device="cpu", torch_dtype="float16")[1]


def test_half_precision_model_is_measured_in_float32(tiny, model16):
    """fp16 weights: q/k and the model's rotary cos/sin are taken to float32 before the softmax."""
    tokenizer, model32, processor, _ = tiny
    ids, pixels = _inputs(tokenizer, processor, model32.config, RECORDS[0])
    half = run_prefill(model16, ids, pixels.half(), None, [3])[0].layers[3]
    full = run_prefill(model32, ids, pixels, None, [3])[0].layers[3]
    for kind in KINDS:
        a, b = getattr(half, kind), getattr(full, kind)
        assert a.dtype == torch.float32
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.999, kind
        torch.testing.assert_close(a, b, atol=5e-3, rtol=0.1)


def test_half_precision_last_token_equals_fastv_scores(tiny, model16):
    """In fp16 the analyses and FastV score with the same probe calls (float32 rotary tables): same numbers."""
    from llava.model.llm_loop import LLMLoop
    from llava.pruning.fastv import FastVDropper

    tokenizer, _, processor, _ = tiny
    ids, pixels = _inputs(tokenizer, processor, model16.config, RECORDS[0])
    layer = 2
    mm = model16.prepare_multimodal_inputs(ids, pixels.half(), visual_token_num=None)
    dropper = FastVDropper(mm.image_spans, [64], model16.config.num_hidden_layers, layer=layer)
    LLMLoop(model16.get_model(), model16.lm_head, dropper).prefill(mm.inputs_embeds, mm.attention_mask,
                                                                  mm.position_ids)
    ((start, end),) = mm.image_spans[0]
    ours = run_prefill(model16, ids, pixels.half(), None, [layer - 1], columns=False)[0].layers[layer - 1].last_token
    # Equal on this CPU bit for bit; rotary tables in fp16 instead would differ by ~2e-4 here.
    torch.testing.assert_close(ours, dropper.scores[0, start:end], atol=1e-6, rtol=1e-5)


def test_layers_after_the_last_one_needed_do_not_run(tiny):
    """The forward stops once the last chosen layer is measured; q is kept for the last row only."""
    tokenizer, model, processor, _ = tiny
    ids, pixels = _inputs(tokenizer, processor, model.config, RECORDS[0])
    layers = model.get_model().layers
    ran = []
    handles = [layer.register_forward_pre_hook(lambda _m, _a, i=i: ran.append(i)) for i, layer in enumerate(layers)]
    try:
        result = run_prefill(model, ids, pixels, None, [1], columns=False)[0]
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1]
    assert sorted(result.layers) == [1] and result.layers[1].all_queries is None
