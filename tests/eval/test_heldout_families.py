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


def _onevision_inputs(folder, prompt, images):
    # the family's processor class on the folder's parts (the reference's own expansion of <image>)
    from llava.vision_compat import load_processor

    processor = load_processor(folder)
    assert (processor.num_image_tokens, processor.vision_aspect_ratio) == (256, "anyres_max_4")
    assert [list(p) for p in processor.image_processor.image_grid_pinpoints] == \
        [[224, 448], [448, 224], [448, 448], [224, 672], [672, 224]]
    return dict(processor(images=images or None, text=[prompt], return_tensors="pt"))


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
