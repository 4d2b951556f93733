"""Bad `generate` inputs on the processor families (OneVision, Qwen2.5-VL, Qwen3-VL): each is refused with a
one-line ValueError naming the argument, where it used to be an IndexError, a reshape error deep inside
transformers, or (prompt image tokens without images, raw uint8 or NaN pixels) a silently wrong answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from llava.model.builder import load_pretrained_model
from llava.model.context import ContextOverflowError

FAMILIES = {
    "qwen2_5_vl": ("llava.model.family_qwen2_5_vl", "save_tiny_qwen2_5_vl", "image_grid_thw"),
    "qwen3_vl": ("llava.model.family_qwen3_vl", "save_tiny_qwen3_vl", "image_grid_thw"),
    "llava_onevision": ("llava.model.family_onevision", "save_tiny_onevision", "image_sizes"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """(name, model, processor, batch of one image question, grid keyword) of one tiny family."""
    import importlib

    module, saver, grid_key = FAMILIES[request.param]
    path = getattr(importlib.import_module(module), saver)(tmp_path_factory.mktemp(request.param) / "tiny")
    torch.set_num_threads(2)
    _, model, proc, _ = load_pretrained_model(str(path), device="cpu")
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 84, 3), dtype=np.uint8))
    text = proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what ?"}]}],
                                    add_generation_prompt=True)
    batch = proc(images=[picture], text=[text], return_tensors="pt")
    return request.param, model, proc, batch, grid_key


def _generate(family, **over):
    _, model, _, b, grid_key = family
    kw = dict(inputs=b["input_ids"], attention_mask=b["attention_mask"], images=b["pixel_values"],
              max_new_tokens=1)
    kw[grid_key] = b[grid_key]
    kw.update(over)
    return model.generate(**kw)


def test_the_good_batch_answers(family):
    assert _generate(family).shape == (1, 1)


def test_prompt_image_tokens_without_images_are_refused(family):
    name, *_ , grid_key = family
    with pytest.raises(ValueError, match=rf"^{name}: the prompts hold .*(image.pad|<image>) tokens but no images "
                                         "were given"):
        _generate(family, images=None, **{grid_key: None})


@pytest.mark.parametrize("bad, expected", [
    (lambda pv: (pv * 0 + 3).to(torch.uint8), r"pixel_values must be the processor's normalised floats, got dtype "
                                               r"torch\.uint8 \(raw pixels\?\)"),
    (lambda pv: pv * float("nan"), r"pixel_values hold NaN or infinite values"),
    (lambda pv: [Image.new("RGB", (8, 8))], r"images must be the processor's pixel_values tensor, got "),
])
def test_pixels_that_are_not_the_processors_are_refused(family, bad, expected):
    name, _, _, b, _ = family
    with pytest.raises(ValueError, match=rf"^{name}: {expected}"):
        _generate(family, images=bad(b["pixel_values"]))


def test_prompt_tensors_of_the_wrong_kind_are_refused(family):
    name, _, _, b, _ = family
    ids, mask = b["input_ids"], b["attention_mask"]
    with pytest.raises(ValueError, match=rf"^{name}: attention_mask has shape \(1, {ids.shape[1] - 1}\) but input_ids "
                                         rf"\(1, {ids.shape[1]}\)"):
        _generate(family, attention_mask=mask[:, 1:])
    with pytest.raises(ValueError, match=rf"^{name}: input_ids must hold integer token ids, got dtype torch\.float32"):
        _generate(family, inputs=ids.float())
    with pytest.raises(ValueError, match=rf"^{name}: input_ids must be \[batch, tokens\], got shape \({ids.shape[1]},\)"):
        _generate(family, inputs=ids[0], attention_mask=mask[0])


def test_bad_grids_are_refused(family):
    name, _, _, b, grid_key = family
    grid = b[grid_key]
    if grid_key == "image_grid_thw":
        cases = [(grid[:, :2], r"image_grid_thw must be \[images, 3\] \(t, h, w per image\), got shape \(1, 2\)"),
                 (grid[0], r"image_grid_thw must be \[images, 3\] \(t, h, w per image\), got shape \(3,\)"),
                 (grid.float(), r"image_grid_thw must hold integers, got dtype torch\.float32"),
                 (-grid, r"image_grid_thw holds a non-positive size"),
                 (torch.cat([grid, grid]), r"(pixel_values hold \d+ patches but image_grid_thw .* needs \d+|"
                                           r"the prompts hold 1 image runs but 2 images were given)")]
    else:
        cases = [(grid[0], r"image_sizes must hold one \(height, width\) per image"),
                 (torch.cat([grid, grid]), r"2 image_sizes for 1 images"),
                 (grid * 0, r"image_sizes must be positive integer \(height, width\) pairs"),
                 (-grid, r"image_sizes must be positive integer \(height, width\) pairs")]
    for bad, expected in cases:
        with pytest.raises(ValueError, match=rf"^({name}: )?{expected}"):
            _generate(family, **{grid_key: bad})


def test_qwen_packed_patches_must_match_the_grid(family):
    name, _, _, b, grid_key = family
    if grid_key != "image_grid_thw":
        pytest.skip("OneVision takes views [n_img, P, 3, S, S], checked by image_sizes")
    pv = b["pixel_values"]
    with pytest.raises(ValueError, match=rf"^{name}: pixel_values hold {pv.shape[0] // 2} patches but image_grid_thw"):
        _generate(family, images=pv[: pv.shape[0] // 2])
    with pytest.raises(ValueError, match=rf"^{name}: pixel_values must be the processor's packed patches "
                                         rf"\[patches, {pv.shape[1]}\], got shape \({pv.shape[0]}, {pv.shape[1] - 1}\)"):
        _generate(family, images=pv[:, :-1])


def test_qwen_prompt_longer_than_the_context_is_refused(family, monkeypatch):
    name, model, _, b, grid_key = family
    if grid_key != "image_grid_thw":
        pytest.skip("the LLaVA splice has its own context check (tests/model/test_context.py)")
    config = model.config.get_text_config() if name == "qwen2_5_vl" else model.qwen_config.get_text_config()
    length = b["input_ids"].shape[1]
    monkeypatch.setattr(config, "max_position_embeddings", length - 4)
    with pytest.raises(ContextOverflowError, match=rf"^prompt row 0: \d+ tokens \(text and visual\) exceed the "
                                                   rf"model's context of {length - 4}"):
        _generate(family)
