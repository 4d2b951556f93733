"""Session fixtures: the tiny LLaVA-1.5 saved in both layouts, loaded once, and sample images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "assets" / "samples"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """Folder holding clip-vit-tiny-patch14-336/, llava-v1.5-tiny/ (original layout) and llava-1.5-tiny-hf/."""
    from llava.model.tiny import save_tiny_checkpoint

    out = tmp_path_factory.mktemp("tiny")
    save_tiny_checkpoint(out, hf_layout=True)
    return out


@pytest.fixture(scope="session")
def tiny_path(tiny_dir) -> str:
    return str(tiny_dir / "llava-v1.5-tiny")


@pytest.fixture(scope="session")
def tiny(tiny_path):
    """(tokenizer, model, image_processor, context_len) of the original-layout tiny checkpoint, fp32 CPU."""
    from llava.model.builder import load_pretrained_model

    torch.set_num_threads(2)
    return load_pretrained_model(tiny_path, None, "llava-v1.5-tiny", device="cpu", torch_dtype="float32")


@pytest.fixture(scope="session")
def sample_images():
    from PIL import Image

    return [Image.open(SAMPLES / name).convert("RGB") for name in ("shapes.png", "stripes.png", "scene.png")]


@pytest.fixture(scope="session")
def next_path(tiny_dir) -> str:
    """The tiny LLaVA-1.6 (anyres) checkpoint, original layout, beside the 1.5 one."""
    from llava.model.tiny import save_tiny_next_checkpoint

    return str(save_tiny_next_checkpoint(tiny_dir))


@pytest.fixture(scope="session")
def next_model(next_path):
    """(tokenizer, model, image_processor, context_len) of the tiny LLaVA-1.6, fp32 CPU."""
    from llava.model.builder import load_pretrained_model

    torch.set_num_threads(2)
    return load_pretrained_model(next_path, device="cpu")
