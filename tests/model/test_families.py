"""Tests generated from the families and vision-adapter registries: every registered family's tiny
checkpoint is told apart by its config alone and loads to the same model as the embedded tiny one."""

from __future__ import annotations

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model, read_config
from llava.model.families import family_of, get_family, list_families
from llava.model.multimodal_encoder.registry import list_vision_adapters, vision_adapter
from llava.pruning import PruningConfig


@pytest.fixture(scope="module")
def prompt(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids = torch.tensor([tokenizer_image_token(build_prompt("What is here?", "vicuna_v1", True), tokenizer,
                                              IMAGE_TOKEN_INDEX)])
    return ids, process_images(sample_images[:1], processor, model.config)


def _last_logits(model, ids, pixels, k):
    with torch.no_grad():
        return model(input_ids=ids, images=pixels, pruning=PruningConfig(visual_token_num=k)).logits[:, -1]


# Families whose tiny checkpoint holds the embedded tiny LLaVA's weights; the others have their own
# fidelity tests against transformers' classes (tests/model/test_onevision.py, tests/video).
LLAVA_LAYOUTS = [name for name in list_families() if get_family(name).same_tiny]


@pytest.mark.parametrize("name", list_families())
def test_each_family_detects_only_its_own_tiny_checkpoint_and_loads(name, tmp_path):
    family = get_family(name)
    path = family.tiny(tmp_path)
    raw = read_config(path)
    assert [other for other in list_families() if get_family(other).detect(raw)] == [name]
    assert family_of(raw, path) is family
    _, model, _, _ = load_pretrained_model(path, device="cpu")
    assert model.mm_projector is not None


@pytest.mark.parametrize("name", LLAVA_LAYOUTS)
def test_each_llava_layout_loads_the_same_model_as_the_embedded_tiny_one(name, tiny, prompt, tmp_path):
    path = get_family(name).tiny(tmp_path)
    _, model, _, _ = load_pretrained_model(path, device="cpu")
    ids, pixels = prompt
    vocab = tiny[1].config.vocab_size  # a layout may add rows (llava-hf's image token); compare the shared ones
    for k in (None, 58):
        torch.testing.assert_close(_last_logits(model, ids, pixels, k)[:, :vocab],
                                   _last_logits(tiny[1], ids, pixels, k), atol=1e-5, rtol=1e-5)


def test_unknown_families_and_towers_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"belongs to no known model family \(llava, llava-hf"):
        family_of({"model_type": "bert"}, str(tmp_path))
    with pytest.raises(ValueError, match="unknown model family 'nope'"):
        get_family("nope")
    with pytest.raises(ValueError, match="no vision adapter for model_type 'qwen2_5_vl'"):
        vision_adapter("qwen2_5_vl")


def test_the_vision_adapters_are_registered_by_model_type():
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
    from llava.model.multimodal_encoder.qwen2_5_vl_encoder import Qwen25VisionTower
    from llava.model.multimodal_encoder.qwen3_vl_encoder import Qwen3VLVisionTower
    from llava.model.multimodal_encoder.siglip_encoder import SiglipVisionTower

    assert list_vision_adapters() == {"clip": CLIPVisionTower, "clip_vision_model": CLIPVisionTower,
                                      "siglip": SiglipVisionTower, "siglip_vision_model": SiglipVisionTower,
                                      "qwen2_5_vl_vision": Qwen25VisionTower, "qwen3_vl_vision": Qwen3VLVisionTower}


# CLIP adapters against the embedded tiny CLIP tower; SigLIP against transformers' in test_onevision.py.
@pytest.mark.parametrize("model_type", sorted(t for t in list_vision_adapters() if t.startswith("clip")))
def test_each_clip_adapter_runs_to_the_selected_layer_with_signals(model_type, tiny, prompt):
    tower = tiny[1].get_vision_tower()
    adapter = vision_adapter(model_type)
    fresh = adapter.from_config(tower.config.to_dict(), -2, "patch")
    fresh.vision_tower.load_state_dict(tower.vision_tower.state_dict())
    _, pixels = prompt
    ours, ref = fresh(pixels, needs=frozenset({"cls_attn"})), tower(pixels, needs=frozenset({"cls_attn"}))
    assert ours.features.shape == (1, fresh.num_patches, tower.hidden_size)
    torch.testing.assert_close(ours.features, ref.features)
    torch.testing.assert_close(ours.cls_attn, ref.cls_attn)
