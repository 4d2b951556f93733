"""The model takes pruning as a value: per call, per block, or as its default; never from model.config."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from transformers import CLIPVisionModel

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.tiny import CLIP_DIR, HF_DIR
from llava.pruning import PruningConfig
from llava.pruning.config import LEGACY_CONFIG_KEYS


@pytest.fixture(scope="module")
def one(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids = tokenizer_image_token(build_prompt("What is it?", "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX,
                                return_tensors="pt")[None]
    return ids, process_images(sample_images[:1], processor, model.config)


def test_a_call_value_leaves_the_default_alone(tiny, one):
    model = tiny[1]
    ids, pixels = one
    default = model.pruning
    model.generate(ids, images=pixels, max_new_tokens=1, do_sample=False, pruning=PruningConfig("uniform", 36))
    assert model.last_multimodal.token_counts == [36] and model.pruning is default
    model.generate(ids, images=pixels, max_new_tokens=1, do_sample=False)
    assert model.last_multimodal.token_counts == [576]
    encoded = model.encode_images(pixels, pruning=PruningConfig(visual_token_num=29))
    assert encoded.token_counts == [29] and encoded.budgets == [29]
    with pytest.raises(TypeError, match="PruningConfig"):
        model.encode_images(pixels, pruning={"visual_token_num": 29})


def test_ratio_resolves_against_the_image_tokens(tiny, one):
    model = tiny[1]
    ids, pixels = one
    model.generate(ids, images=pixels, max_new_tokens=1, do_sample=False, pruning=PruningConfig(ratio=0.9))
    assert model.last_multimodal.token_counts == [round(576 * 0.1)]
    by_k = model(input_ids=ids, images=pixels, pruning=PruningConfig(visual_token_num=58)).logits
    by_ratio = model(input_ids=ids, images=pixels, pruning=PruningConfig(ratio=0.9)).logits
    assert torch.equal(by_k, by_ratio)  # round(576 * 0.1) = 58


def test_per_image_budgets_override_the_value(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids = tokenizer_image_token(build_prompt("<image>\nCompare.", "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX,
                                return_tensors="pt")[None]
    pixels = process_images(sample_images[:2], processor, model.config)
    model.generate(ids, images=pixels, max_new_tokens=1, do_sample=False, visual_token_num=[576, 58],
                   pruning=PruningConfig("uniform", 29))
    assert model.last_multimodal.token_counts == [576, 58]


def test_context_manager_restores_on_exit_and_on_errors(tiny, one):
    model = tiny[1]
    ids, pixels = one
    default = model.pruning
    with model.pruning_config(PruningConfig(visual_token_num=29)) as cfg:
        assert model.pruning is cfg
        model.generate(ids, images=pixels, max_new_tokens=1, do_sample=False)
        assert model.last_multimodal.token_counts == [29]
    assert model.pruning is default
    with pytest.raises(RuntimeError, match="boom"):
        with model.pruning_config(PruningConfig(visual_token_num=58)):
            raise RuntimeError("boom")
    assert model.pruning is default
    with pytest.raises(TypeError, match="PruningConfig"):
        with model.pruning_config(58):  # type: ignore[arg-type]
            pass


def test_set_pruning_is_a_convenience_for_the_default(tiny):
    model = tiny[1]
    with model.pruning_config(PruningConfig()):
        cfg = model.set_pruning(64, "visionzip", "contextual=4")
        assert cfg is model.pruning and cfg == PruningConfig("visionzip", 64, method_args={"contextual": 4})
        assert model.set_pruning(32) == cfg.replace(visual_token_num=32)  # method and args kept
        assert model.set_pruning(None, "random") == PruningConfig("random")  # another method drops the args
        assert model.set_pruning(ratio=0.5).ratio == 0.5
        with pytest.raises(ValueError, match="must be one integer"):
            model.set_pruning([576, 58])
        assert not set(LEGACY_CONFIG_KEYS) & set(vars(model.config))


def test_save_pretrained_writes_no_pruning_settings(tiny, tmp_path):
    model = tiny[1]
    with model.pruning_config(PruningConfig()):
        model.set_pruning(29, "random", {"seed": 3}, "paper")
        model.save_pretrained(tmp_path / "saved")
    raw = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert not set(LEGACY_CONFIG_KEYS) & set(raw) and "mm_hidden_size" in raw


def test_legacy_config_is_read_once_into_the_model_default(tiny_dir, tmp_path):
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_dir / "llava-v1.5-tiny", legacy)
    raw = json.loads((legacy / "config.json").read_text())
    raw.update(visual_token_num=29, pruning_method="random", pruning_args={"seed": 3}, anyres_mode="faithful")
    (legacy / "config.json").write_text(json.dumps(raw))
    expected = PruningConfig("random", 29, method_args={"seed": 3})

    _, model, _, _ = load_pretrained_model(str(legacy), device="cpu")
    assert model.pruning == expected
    assert not set(LEGACY_CONFIG_KEYS) & set(vars(model.config))
    _, model, _, _ = load_pretrained_model(str(legacy), device="cpu", visual_token_num=58)
    assert model.pruning == expected.replace(visual_token_num=58)  # given fields win, the rest is kept
    direct = LlavaLlamaForCausalLM.from_pretrained(str(legacy))
    assert direct.pruning == expected and not set(LEGACY_CONFIG_KEYS) & set(vars(direct.config))
    direct.save_pretrained(tmp_path / "resaved")
    assert not set(LEGACY_CONFIG_KEYS) & set(json.loads((tmp_path / "resaved" / "config.json").read_text()))
    with pytest.raises(ValueError, match="not both"):
        load_pretrained_model(str(legacy), device="cpu", pruning=expected, visual_token_num=58)


def _deprecations(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))
            and "deprecated" in str(w.message)]


def test_generate_and_forward_emit_no_deprecation_warning(tiny, one):
    model = tiny[1]
    ids, pixels = one
    rows = []  # positions the LM head sees: the prefill asks for the last one only (logits_to_keep)
    hook = model.lm_head.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[1]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.generate(ids, images=pixels, max_new_tokens=3, do_sample=False,
                           pruning=PruningConfig(visual_token_num=58))
        finally:
            hook.remove()
        out = model(input_ids=ids, images=pixels, use_cache=True, pruning=PruningConfig(visual_token_num=58))
        labels = torch.where(ids == IMAGE_TOKEN_INDEX, -100, ids)
        model(input_ids=ids, images=pixels, labels=labels)
    assert _deprecations(caught) == []
    assert rows == [1, 1, 1]
    assert out.logits.shape[1] == ids.shape[1] - 1 + 58


@pytest.mark.parametrize("layout", ["original", "hf"])
def test_eager_vision_attention_equals_eager_clip_bitwise(tiny_dir, one, layout):
    ids, pixels = one
    path = tiny_dir / ("llava-v1.5-tiny" if layout == "original" else HF_DIR)
    _, model, _, _ = load_pretrained_model(str(path), device="cpu", vision_attn_implementation="eager")
    tower = model.get_vision_tower()
    assert tower.config._attn_implementation == "eager"
    reference = CLIPVisionModel.from_pretrained(str(tiny_dir / CLIP_DIR), attn_implementation="eager").eval()
    with torch.no_grad():
        expected = reference(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]  # [1, 576, D]
    assert torch.equal(tower(pixels).features, expected)
    with pytest.raises(ValueError, match="vision_attn_implementation"):
        load_pretrained_model(str(path), device="cpu", vision_attn_implementation="flash")
