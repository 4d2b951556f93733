"""Checkpoints saved by the tests load in both layouts and agree with the model that wrote them."""

from __future__ import annotations

import json

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.tiny import HF_DIR, build_tiny_model
from llava.pruning import PruningConfig
from llava.pruning.config import LEGACY_CONFIG_KEYS


def _logits(model, tokenizer, processor, image, k=None):
    ids = tokenizer_image_token(build_prompt("What is it?", "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX,
                                return_tensors="pt")[None]
    pixels = process_images([image], processor, model.config)
    return model(input_ids=ids, images=pixels, visual_token_num=k).logits


def test_original_layout_has_the_llava_model_type_quirk_and_loads(tiny, tiny_path, sample_images):
    raw = json.loads(open(f"{tiny_path}/config.json").read())
    assert raw["model_type"] == "llava" and "mm_vision_tower" in raw and "vision_config" not in raw
    tokenizer, model, processor, context_len = tiny
    assert context_len == 2048
    assert model.get_vision_tower() is not None and model.pruning == PruningConfig()
    assert not set(LEGACY_CONFIG_KEYS) & set(vars(model.config))  # pruning is never on the config
    reference = build_tiny_model(len(tokenizer))  # the weights the checkpoint was written from
    for (name, ours), (_, ref) in zip(model.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(ours, ref), name
    torch.testing.assert_close(_logits(model, tokenizer, processor, sample_images[0]),
                               _logits(reference, tokenizer, processor, sample_images[0]), atol=0, rtol=0)


def test_hf_layout_loads_into_the_same_class_and_agrees(tiny, tiny_dir, sample_images):
    tokenizer, model, processor, _ = tiny
    hf_tok, hf_model, hf_proc, _ = load_pretrained_model(str(tiny_dir / HF_DIR), device="cpu", visual_token_num=58)
    assert type(hf_model) is type(model)
    assert hf_model.pruning == PruningConfig(visual_token_num=58)
    for k in (None, 58):
        ours = _logits(model, tokenizer, processor, sample_images[1], k)
        theirs = _logits(hf_model, hf_tok, hf_proc, sample_images[1], k)
        assert theirs.shape[-1] == ours.shape[-1] + 1  # the llava-hf vocabulary holds the <image> token
        torch.testing.assert_close(theirs[..., : ours.shape[-1]], ours, atol=1e-6, rtol=1e-6)


def test_loader_options(tiny_path, sample_images):
    tokenizer, model, processor, _ = load_pretrained_model(
        tiny_path, device="cpu", torch_dtype="bfloat16", visual_token_num=29, pruning_method="random",
        pruning_args="seed=3",
    )
    assert model.dtype == torch.bfloat16 and model.get_vision_tower().dtype == torch.bfloat16
    assert model.pruning == PruningConfig("random", 29, method_args={"seed": 3})
    assert model.config._attn_implementation == "sdpa"
    ids = tokenizer_image_token(build_prompt("Hi?", "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    pixels = process_images(sample_images[:1], processor, model.config).to(torch.bfloat16)
    out = model.generate(ids[None], images=pixels, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 3) and model.last_multimodal.token_counts == [29]


def test_vision_tower_override_and_errors(tiny_dir, tmp_path):
    clip = tiny_dir / "clip-vit-tiny-patch14-336"
    _, model, _, _ = load_pretrained_model(str(tiny_dir / "llava-v1.5-tiny"), device="cpu", vision_tower_path=str(clip))
    assert model.get_vision_tower().vision_tower_name == str(clip)
    with pytest.raises(FileNotFoundError, match="not-a-model"):
        load_pretrained_model(str(tmp_path / "not-a-model"), device="cpu")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(ValueError, match="belongs to no known model family"):
        load_pretrained_model(str(bad), device="cpu")
    with pytest.raises(FileNotFoundError, match="no-such-clip"):
        load_pretrained_model(str(tiny_dir / "llava-v1.5-tiny"), device="cpu", vision_tower_path="org/no-such-clip")
