"""Issue 15's held-out check on checkpoints our `tiny` builders never made (`independent_checkpoints`).

Each family's checkpoint is built by transformers' classes alone, with geometry away from our tiny
defaults and its processor files in the layout the stock processor (or its parts) writes. Loaded
with `--model-path`, `model_vqa_loader` answers as transformers' own class does with no budget, and
keeps at most 64 visual tokens per image at `--visual-token-num 64`.
"""

from __future__ import annotations

import pytest
import transformers

import independent_checkpoints as ic
from family_driver_checks import check_budget, check_unpruned


def _processor_inputs(folder, prompt, images):
    """The family's processor class on the folder's parts (the reference's own expansion of <image>)."""
    from llava.vision_compat import load_processor

    return dict(load_processor(folder)(images=images or None, text=[prompt], return_tensors="pt"))


def _onevision_inputs(folder, prompt, images):
    from llava.vision_compat import load_processor

    processor = load_processor(folder)
    assert (processor.num_image_tokens, processor.vision_aspect_ratio) == (256, "anyres_max_4")
    assert [list(p) for p in processor.image_processor.image_grid_pinpoints] == \
        [[224, 448], [448, 224], [448, 448], [224, 672], [672, 224]]
    return _processor_inputs(folder, prompt, images)


FAMILIES = {
    "llava-onevision": (ic.build_onevision, "LlavaOnevisionForConditionalGeneration", _onevision_inputs),
    "qwen2_5_vl": (ic.build_qwen2_5_vl, "Qwen2_5_VLForConditionalGeneration", ic.reference_inputs),
    "qwen3_vl": (ic.build_qwen3_vl, "Qwen3VLForConditionalGeneration", ic.reference_inputs),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def checkpoint(request, tmp_path_factory):
    build, cls_name, make_inputs = FAMILIES[request.param]
    folder = build(tmp_path_factory.mktemp(request.param) / "ckpt")
    return request.param, folder, getattr(transformers, cls_name), make_inputs


def test_the_folder_is_detected_as_its_family(checkpoint):
    from llava.eval.runner import model_family

    family, folder, _, _ = checkpoint
    assert model_family(str(folder)) == family


def test_unpruned_answers_equal_transformers(checkpoint, tmp_path):
    _, folder, hf_class, make_inputs = checkpoint
    check_unpruned(folder, hf_class, make_inputs, tmp_path)


def test_k64_keeps_at_most_64_tokens_per_image(checkpoint, tmp_path):
    _, folder, _, _ = checkpoint
    answers = check_budget(folder, tmp_path, k=64)
    assert any(a["metadata"]["visual_tokens_unpruned"] > 64 for a in answers if a["question_id"] != 3)


@pytest.mark.parametrize("build, pixels", [(ic.build_qwen2_5_vl, (ic.QWEN25_MIN_PIXELS, ic.QWEN25_MAX_PIXELS)),
                                           (ic.build_qwen3_vl, (ic.QWEN3_MIN_PIXELS, ic.QWEN3_MAX_PIXELS))],
                         ids=["qwen2_5_vl", "qwen3_vl"])
@pytest.mark.parametrize("layout", ["processor", "parts", "legacy"])
def test_every_processor_layout_loads_and_encodes_as_the_stock_processor(build, pixels, layout, tmp_path):
    """Each layout's folder loads (family, tokenizer, processor) and encodes a two-image prompt as the
    stock processor does (pads expanded per image grid, token types, pixels)."""
    import torch
    from PIL import Image

    from llava.eval.runner import model_family
    from llava.model.inputs_builder import get_inputs_builder
    from llava.vision_compat import load_processor

    folder = build(tmp_path / layout, layout=layout)
    family = model_family(str(folder))
    builder = get_inputs_builder(family)
    processor = load_processor(folder)
    size = processor.image_processor.size
    assert (size["shortest_edge"], size["longest_edge"]) == pixels  # the folder's min / max pixels
    prompt = builder.prompt(processor, "which is wider ?", 2)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.")  # the folder's own template
    # one image above max_pixels (resized down), one below min_pixels (resized up)
    images = [Image.new("RGB", (700, 300), (200, 30, 30)), Image.new("RGB", (30, 40), (20, 90, 200))]
    mine = builder.encode(processor, [prompt], [images])
    want = ic.reference_inputs(folder, prompt, images)
    assert sorted(mine) == sorted(want)
    for key in want:
        assert torch.equal(mine[key], want[key]), key
    merged = (mine["image_grid_thw"].prod(-1) // 4).tolist()
    assert pixels[0] // processor.image_processor.patch_size ** 2 // 4 <= min(merged)
    assert max(merged) <= pixels[1] // processor.image_processor.patch_size ** 2 // 4


def test_onevision_legacy_layout_encodes_as_the_stock_layout(tmp_path):
    """The 4.x layout (flat processor_config.json, preprocessor_config.json, chat_template.json) gives the
    processor the stock layout gives: the same settings and the same encoding of an image prompt."""
    import torch
    from PIL import Image

    from llava.model.inputs_builder import get_inputs_builder
    from llava.vision_compat import load_processor

    builder = get_inputs_builder("llava-onevision")
    images = [Image.new("RGB", (500, 210), (10, 200, 40))]
    encoded = []
    for layout in ("processor", "legacy"):
        processor = load_processor(ic.build_onevision(tmp_path / layout, layout=layout))
        assert (processor.num_image_tokens, processor.vision_aspect_ratio) == (256, "anyres_max_4")
        assert processor.image_processor.size == {"height": 224, "width": 224}
        encoded.append(builder.encode(processor, [builder.prompt(processor, "what is here ?", 1)], [images]))
    assert sorted(encoded[0]) == sorted(encoded[1])
    for key, value in encoded[0].items():
        assert torch.equal(value, encoded[1][key]) if torch.is_tensor(value) else value == encoded[1][key], key


# ---- checkpoints from elsewhere -----------------------------------------------------------------
# HELDOUT_CHECKPOINTS=dir1:dir2 runs the same check on folders made by someone else (skipped when unset).
def _outside_folders() -> list[str]:
    import os

    return [p for p in os.environ.get("HELDOUT_CHECKPOINTS", "").split(os.pathsep) if p]


@pytest.mark.skipif(not _outside_folders(), reason="HELDOUT_CHECKPOINTS names no checkpoint folders")
@pytest.mark.parametrize("folder", _outside_folders())
def test_an_outside_checkpoint_answers_as_transformers_and_keeps_64(folder, tmp_path):
    import json
    from pathlib import Path

    arch = json.loads((Path(folder) / "config.json").read_text())["architectures"][0]
    make_inputs = ic.reference_inputs if arch.startswith("Qwen") else _processor_inputs
    check_unpruned(Path(folder), getattr(transformers, arch), make_inputs, tmp_path / "all")
    check_budget(Path(folder), tmp_path / "k64", k=64)
