"""Damaged checkpoints are refused by name: missing or unexpected weights in every layout, cut-short
safetensors files and JSON that does not parse. Each test copies a tiny checkpoint written with
`save_pretrained` and damages the copy."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llava.model.builder import load_pretrained_model
from llava.model.checkpoint_checks import CheckpointError
from llava.model.tiny import CLIP_DIR, HF_DIR, LLAVA_DIR

ALLOW = ("Check that the folder holds the complete checkpoint (and --model-base for a projector-only one), or pass "
         "allow_missing_weights=True (--allow-missing-weights) to run with those weights randomly initialised")


def _copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def _edit_weights(folder: Path, drop=(), add=None, name="model.safetensors") -> dict:
    """Rewrite `folder/name` without the keys starting with any of `drop`, plus `add`; returns what was removed."""
    weights = load_file(str(folder / name))
    removed = {k: v for k, v in weights.items() if k.startswith(tuple(drop))}
    kept = {k: v for k, v in weights.items() if k not in removed}
    save_file({**kept, **(add or {})}, str(folder / name), metadata={"format": "pt"})
    return removed


def test_original_layout_without_projector_is_refused(tiny_dir, tmp_path, caplog):
    ckpt = _copy(tiny_dir / LLAVA_DIR, tmp_path / "no-projector")
    _edit_weights(ckpt, drop=["model.mm_projector."])
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(ckpt), device="cpu")
    assert str(err.value) == (
        f"{ckpt}: the checkpoint's weights do not fit the LLaVA model: 4 missing (model.mm_projector.0.bias, "
        f"model.mm_projector.0.weight, model.mm_projector.2.bias, ... (1 more)). {ALLOW}")
    with caplog.at_level(logging.WARNING, logger="llava.model.checkpoint_checks"):
        _, model, _, _ = load_pretrained_model(str(ckpt), device="cpu", allow_missing_weights=True)
    assert model.mm_projector[0].weight.shape == (128, 64)
    assert "4 missing (model.mm_projector.0.bias" in caplog.text and "continuing: allow_missing_weights" in caplog.text


def test_hf_layout_missing_and_unexpected_weights(tiny_dir, tmp_path):
    ckpt = _copy(tiny_dir / HF_DIR, tmp_path / "hf-damaged")
    _edit_weights(ckpt, drop=["multi_modal_projector.linear_2."], add={"model.extra_head.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(ckpt), device="cpu")
    assert str(err.value) == (
        f"{ckpt}: the checkpoint's weights do not fit the LLaVA model: 2 missing (model.mm_projector.2.bias, "
        f"model.mm_projector.2.weight); 1 unexpected (model.extra_head.weight). {ALLOW}")


def test_hf_layout_without_tower_weights_is_refused(tiny_dir, tmp_path):
    ckpt = _copy(tiny_dir / HF_DIR, tmp_path / "hf-no-tower")
    _edit_weights(ckpt, drop=["vision_tower.encoder.layers.3."])
    with pytest.raises(CheckpointError, match=r"hf-no-tower: the checkpoint's weights do not fit the LLaVA model: "
                                              r"16 missing \(model\.vision_tower\.vision_tower\.encoder\.layers\.3\."):
        load_pretrained_model(str(ckpt), device="cpu")


def _projector_only(tiny_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(base LLM folder without the projector, projector-only folder with config.json + mm_projector.safetensors)."""
    base = _copy(tiny_dir / LLAVA_DIR, tmp_path / "base-llm")
    projector = _edit_weights(base, drop=["model.mm_projector."])
    stage1 = tmp_path / "llava-pretrain"
    stage1.mkdir()
    shutil.copy(base / "config.json", stage1 / "config.json")
    save_file(projector, str(stage1 / "mm_projector.safetensors"))
    return base, stage1


def test_projector_only_with_model_base_is_its_own_layout(tiny, tiny_dir, tmp_path):
    base, stage1 = _projector_only(tiny_dir, tmp_path)
    _, model, _, _ = load_pretrained_model(str(stage1), str(base), "llava-pretrain", device="cpu")
    reference = tiny[1].state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference[name]), name


def test_projector_file_missing_a_tensor_is_refused(tiny_dir, tmp_path):
    base, stage1 = _projector_only(tiny_dir, tmp_path)
    _edit_weights(stage1, drop=["model.mm_projector.2.bias"], name="mm_projector.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(stage1), str(base), "llava-pretrain", device="cpu")
    assert str(err.value) == (f"{stage1 / 'mm_projector.safetensors'}: the checkpoint's weights do not fit the "
                              f"projector: 1 missing (mm_projector.2.bias). {ALLOW}")


def test_vision_tower_folder_missing_weights_is_refused(tiny_dir, tmp_path):
    clip = _copy(tiny_dir / CLIP_DIR, tmp_path / "clip-damaged")
    _edit_weights(clip, drop=["vision_model.post_layernorm."])
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(tiny_dir / LLAVA_DIR), device="cpu", vision_tower_path=str(clip))
    assert str(err.value) == (f"{clip}: the checkpoint's weights do not fit the CLIP vision tower: 2 missing "
                              f"(post_layernorm.bias, post_layernorm.weight). {ALLOW}")


def test_clip_text_half_is_ignored(tiny_dir, tmp_path):
    clip = _copy(tiny_dir / CLIP_DIR, tmp_path / "clip-full")
    _edit_weights(clip, add={"text_model.embeddings.token_embedding.weight": torch.zeros(4, 2),
                             "logit_scale": torch.zeros(())})
    _, model, _, _ = load_pretrained_model(str(tiny_dir / LLAVA_DIR), device="cpu", vision_tower_path=str(clip))
    assert model.get_vision_tower().vision_tower_name == str(clip)


@pytest.fixture(scope="module")
def next_dir(tmp_path_factory) -> Path:
    from llava.model.tiny import save_tiny_next_checkpoint

    return save_tiny_next_checkpoint(tmp_path_factory.mktemp("next"))


def test_tuned_tower_overlay_missing_weights(next_dir, tmp_path):
    prefix = "model.vision_tower.vision_tower.vision_model."
    partial = _copy(next_dir, tmp_path / "next-partial-tower")
    _edit_weights(partial, drop=[prefix + "pre_layrnorm."])
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(partial), device="cpu")
    assert str(err.value) == (
        f"{partial}: the checkpoint's weights do not fit the fine-tuned vision tower: 2 missing "
        f"(model.vision_tower.vision_tower.pre_layrnorm.bias, model.vision_tower.vision_tower.pre_layrnorm.weight). "
        f"{ALLOW}")
    none = _copy(next_dir, tmp_path / "next-no-tower")
    _edit_weights(none, drop=["model.vision_tower."])
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(none), device="cpu")
    assert str(err.value) == (
        f"{none}: config.json says the vision tower was fine-tuned (unfreeze_mm_vision_tower) but the checkpoint "
        f"holds no model.vision_tower.vision_tower.* tensors; restore the complete checkpoint, or pass "
        f"allow_missing_weights=True (--allow-missing-weights) to use the CLIP tower's own weights")
    _, model, _, _ = load_pretrained_model(str(none), device="cpu", allow_missing_weights=True)
    assert model.is_anyres()


def test_truncated_safetensors_is_named(tiny_dir, tmp_path):
    ckpt = _copy(tiny_dir / LLAVA_DIR, tmp_path / "cut")
    weights = ckpt / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(ckpt), device="cpu")
    assert str(err.value) == f"{weights}: truncated safetensors file ({size // 2} of {size} bytes); re-download it"
    weights.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(ckpt), device="cpu")
    assert str(err.value) == f"{weights}: truncated safetensors file (2 bytes, no header); re-download it"


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json"])
def test_json_that_does_not_parse_is_named(tiny_dir, tmp_path, name):
    ckpt = _copy(tiny_dir / LLAVA_DIR, tmp_path / "bad-json")
    (ckpt / name).write_text('{"architectures": ["LlavaLlamaForCausalLM"],')
    with pytest.raises(CheckpointError) as err:
        load_pretrained_model(str(ckpt), device="cpu")
    assert str(err.value) == (f"{ckpt / name}: not valid JSON (Expecting property name enclosed in double quotes: "
                              f"line 1 column 45 (char 44)); restore this file from the original checkpoint")


def test_the_intact_checkpoints_load_without_a_warning(tiny_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="llava.model.checkpoint_checks"):
        for name in (LLAVA_DIR, HF_DIR):
            load_pretrained_model(str(tiny_dir / name), device="cpu")
    assert caplog.text == ""
    assert json.loads((tiny_dir / LLAVA_DIR / "config.json").read_text())["model_type"] == "llava"
