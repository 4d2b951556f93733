"""The attention-shift and attention-dispersion analyses on images with views: LLaVA-OneVision and LLaVA-NeXT.

The measured tokens are the base view's (27 x 27 = 729 for OneVision, 24 x 24 = 576 for NeXT) at the
start of each image block. OneVision is checked against transformers' own
LlavaOnevisionForConditionalGeneration run eagerly with output_attentions (prompts from its chat
template, reference row the SigLIP tower's [CLS] stand-in, mean_attn); NeXT against eager maps of the
same splice, with CLIP's [CLS] row of the base view.
"""

from __future__ import annotations

import pytest
import torch
from analysis_helpers import MEASURED, RECORDS, SAMPLES, run_args
from PIL import Image

from llava.analysis import attn_dispersion, attn_shift, common


@pytest.fixture(scope="module")
def ov_path(tmp_path_factory):
    from llava.model.family_onevision import save_tiny_onevision

    return str(save_tiny_onevision(tmp_path_factory.mktemp("ov") / "tiny", vision_aspect_ratio="anyres_max_2"))


@pytest.fixture(scope="module")
def shift(ov_path, mini_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov_shift")
    return attn_shift.main(run_args(ov_path, mini_data, out, "--layers", "0,1")), out


def _eager_rows(ov_path, text: str, image_file: str):
    """transformers' eager attentions of the chat-template prompt: (per-layer [H, T, T], image start, image end)."""
    from transformers import LlavaOnevisionForConditionalGeneration

    from llava.vision_compat import load_processor

    processor = load_processor(ov_path)
    ids, views, size = common.processor_sample(processor, text, Image.open(SAMPLES / image_file).convert("RGB"))
    ref = LlavaOnevisionForConditionalGeneration.from_pretrained(ov_path, attn_implementation="eager").eval()
    with torch.no_grad():
        out = ref(input_ids=ids[None], pixel_values=views[None], image_sizes=torch.tensor([size]),
                  output_attentions=True)
    is_image = (ids == ref.config.image_token_id).nonzero().flatten()
    return [a[0].float() for a in out.attentions], int(is_image[0]), int(is_image[-1]) + 1


def test_shift_on_onevision_equals_transformers_eager_attention(shift, ov_path):
    stats, out = shift
    assert stats["num_samples"] == len(MEASURED) and stats["grid"] == 27 and stats["num_image_tokens"] == 729
    assert stats["reference_signal"] == "[CLS] stand-in mean_attn (base view)"
    assert stats["prompt"] == "chat template"
    assert (out / "attn_shift_maps.png").is_file() and (out / "cls_attn.png").is_file()
    last, text, every = [], [], []  # per sample: per layer [729]
    for record in RECORDS:
        if record["id"] not in MEASURED:
            continue
        attentions, start, end = _eager_rows(ov_path, record["conversations"][0]["value"], record["image"])
        assert end - start > 729  # base view, then the grid and its newlines
        heads = [a.mean(0) for a in attentions]  # L x [T, T]
        base = slice(start, start + 729)
        last.append(torch.stack([a[-1, base] for a in heads]))
        text.append(torch.stack([a[end:, base].mean(0) for a in heads]))  # the question's queries after the image
        seen = heads[0].shape[0] - torch.arange(start, start + 729)  # causal: queries i >= p
        every.append(torch.stack([a[:, base].sum(0) / seen for a in heads]))
    for kind, rows in (("last_token", last), ("text_queries", text), ("all_queries", every)):
        want = torch.stack(rows).mean(0).double()  # mean over samples: [L, 729]
        torch.testing.assert_close(torch.tensor(stats["llm"][kind], dtype=torch.float64), want, atol=1e-6, rtol=1e-4)


def test_the_reference_row_is_the_stand_in_of_the_base_view(shift, ov_path):
    from llava.model.builder import load_pretrained_model
    from llava.vision_compat import load_processor

    stats, _ = shift
    _, model, _, _ = load_pretrained_model(ov_path, device="cpu")
    processor = load_processor(ov_path)
    rows = []
    for name in ("shapes.png", "scene.png"):
        _, views, _ = common.processor_sample(processor, "<image>\nq", Image.open(SAMPLES / name).convert("RGB"))
        rows.append(model.get_vision_tower()(views[:1], needs=frozenset({"mean_attn"})).mean_attn[0].double())
    torch.testing.assert_close(torch.tensor(stats["cls_attn"], dtype=torch.float64), torch.stack(rows).mean(0),
                               atol=1e-7, rtol=1e-5)


def test_dispersion_on_onevision(ov_path, mini_data, tmp_path):
    stats = attn_dispersion.main(run_args(ov_path, mini_data, tmp_path, "--layer", "1"))
    assert stats["num_samples"] == len(MEASURED) and stats["num_image_tokens"] == 729
    assert 0 < stats["summary_mean"]["cls"]["entropy"] <= 1 and 0 < stats["summary_mean"]["llm"]["image_mass"] < 1
    assert (tmp_path / "attn_dispersion_cumulative.png").is_file()


def test_shift_on_llava_next_measures_the_base_view_against_eager_maps(next_path, mini_data, tmp_path):
    """LLaVA-NeXT (anyres): the base view's 576 tokens inside the whole block, vs eager maps of the same splice."""
    from llava.conversation import conv_templates
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.model.builder import load_pretrained_model

    stats = attn_shift.main(run_args(next_path, mini_data, tmp_path))
    assert stats["num_image_tokens"] == 576 and stats["reference_signal"] == "CLIP [CLS] (base view)"
    tokenizer, eager, processor, _ = load_pretrained_model(next_path, device="cpu", attn_implementation="eager")
    kinds = {"last_token": [], "text_queries": [], "image_queries": []}
    cls = []
    for record in (r for r in RECORDS if r["id"] in MEASURED):
        conv = conv_templates["vicuna_v1"].copy()
        conv.append_message(conv.roles[0], record["conversations"][0]["value"])
        conv.append_message(conv.roles[1], None)
        ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]
        image = Image.open(SAMPLES / record["image"]).convert("RGB")
        views = process_images([image], processor, eager.config)[0]  # [V, 3, S, S]
        with torch.no_grad():
            mm = eager.prepare_multimodal_inputs(ids, [views], image_sizes=[image.size], visual_token_num=None)
            maps = eager(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask,
                         position_ids=mm.position_ids, output_attentions=True).attentions
            cls.append(eager.get_vision_tower()(views[:1], needs=frozenset({"cls_attn"})).cls_attn[0].double())
        ((start, end),) = mm.image_spans[0]
        assert end - start > 576  # base view, then the grid with its newlines
        maps = torch.stack(maps)[:, 0].mean(1).double()  # [L, T, T]
        base = slice(start, start + 576)
        seen_image = end - torch.arange(start, start + 576, dtype=torch.float64)
        kinds["last_token"].append(maps[:, -1, base])
        kinds["text_queries"].append(maps[:, end:, base].mean(1))
        kinds["image_queries"].append(maps[:, start:end, base].sum(1) / seen_image)
    for kind, rows in kinds.items():
        torch.testing.assert_close(torch.tensor(stats["llm"][kind], dtype=torch.float64), torch.stack(rows).mean(0),
                                   atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(stats["cls_attn"], dtype=torch.float64), torch.stack(cls).mean(0),
                               atol=1e-6, rtol=1e-4)
