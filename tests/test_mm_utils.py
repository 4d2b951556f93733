"""Image and prompt helpers against the original LLaVA (transformers 4.37 CLIPImageProcessor), in one oracle run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.mm_utils import (
    KeywordsStoppingCriteria,
    expand2square,
    get_model_name_from_path,
    load_image,
    load_image_processor,
    process_images,
    tokenizer_image_token,
)
from llava.model.tokenizer import load_tokenizer, save_tiny_tokenizer
from oracle import run_oracle

# (width, height): square, landscape, portrait, upscaled, extreme, odd sizes.
IMAGE_SIZES = [(336, 336), (500, 300), (300, 500), (64, 48), (1000, 20), (337, 335), (223, 225)]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
PROCESSORS = {
    # openai/clip-vit-large-patch14-336 (LLaVA-1.5's vision tower): the old layout with int sizes.
    "clip336": {
        "crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": CLIP_MEAN, "image_std": CLIP_STD,
        "resample": 3, "size": 336,
    },
    # The newer layout with size dicts.
    "clip224": {
        "crop_size": {"height": 224, "width": 224}, "do_center_crop": True, "do_convert_rgb": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor", "image_std": CLIP_STD, "resample": 3,
        "rescale_factor": 0.00392156862745098, "size": {"shortest_edge": 224},
    },
}
MODEL_PATHS = ["liuhaotian/llava-v1.5-7b", "/ckpts/llava-v1.5-13b/", "runs/llava-lora/checkpoint-500", "model"]


def _make_images(folder: Path) -> list[str]:
    rng = np.random.RandomState(0)
    paths = []
    for i, (w, h) in enumerate(IMAGE_SIZES):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], axis=-1)
        noise = rng.randint(0, 40, size=(h, w, 3))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = folder / f"img{i}_{w}x{h}.png"
        Image.fromarray(pixels, "RGB").save(path)
        paths.append(str(path))
    return paths


ORACLE_JOB = r"""
import numpy as np, torch
from types import SimpleNamespace
from PIL import Image
from transformers import AutoTokenizer, CLIPImageProcessor
from llava.mm_utils import process_images, expand2square, get_model_name_from_path, KeywordsStoppingCriteria

out = PAYLOAD["out"]
images = [Image.open(p).convert("RGB") for p in PAYLOAD["images"]]
for name, folder in PAYLOAD["processors"].items():
    proc = CLIPImageProcessor.from_pretrained(folder)
    for mode in ("pad", None):
        pix = process_images(images, proc, SimpleNamespace(image_aspect_ratio=mode))
        np.save(f"{out}/{name}_{mode}.npy", pix.numpy())
    one = proc.preprocess(images[1], return_tensors="pt")["pixel_values"]
    np.save(f"{out}/{name}_single.npy", one.numpy())
for i, im in enumerate(images):
    np.save(f"{out}/square_{i}.npy", np.asarray(expand2square(im, (122, 116, 104))))

tok = AutoTokenizer.from_pretrained(PAYLOAD["tokenizer"], use_fast=False)
stops = []
for case in PAYLOAD["stop_cases"]:
    prompt = torch.tensor([case["prompt"]])
    crit = KeywordsStoppingCriteria(case["keywords"], tok, prompt)
    stops.append(bool(crit(torch.tensor(case["rows"]), None)))
RESULT = dict(names=[get_model_name_from_path(p) for p in PAYLOAD["model_paths"]], stops=stops)
"""


def _stop_cases(tok) -> list[dict]:
    prompt = tok("USER: Hi ASSISTANT:").input_ids
    ids = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    eos = tok.eos_token_id
    pad_to = lambda rows: [r + [0] * (max(map(len, rows)) - len(r)) for r in rows]  # noqa: E731
    hit_eos = prompt + ids("A red car.") + [eos]
    hit_text = prompt + ids("A red car.###")
    miss = prompt + ids("A red car")
    cases = [
        dict(keywords=["</s>"], rows=[hit_eos]),
        dict(keywords=["###"], rows=[hit_text]),
        dict(keywords=["###"], rows=[miss]),
        dict(keywords=["</s>"], rows=[miss]),
        dict(keywords=["</s>", "###"], rows=[hit_eos, hit_text + [0]]),
    ]
    same_len = pad_to([hit_eos, miss])
    cases.append(dict(keywords=["</s>"], rows=same_len))  # only one row has stopped
    for case in cases:
        case["prompt"] = prompt
        case["rows"] = pad_to(case["rows"])
    return cases


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Processor folders, image files and the tiny tokenizer."""
    root = tmp_path_factory.mktemp("mm")
    processors = {}
    for name, config in PROCESSORS.items():
        folder = root / name
        folder.mkdir()
        (folder / "preprocessor_config.json").write_text(json.dumps(config))
        processors[name] = str(folder)
    tok_dir = save_tiny_tokenizer(root / "tokenizer")
    out = root / "oracle_out"
    out.mkdir()
    return dict(
        out=str(out), images=_make_images(root), processors=processors, tokenizer=str(tok_dir),
        model_paths=MODEL_PATHS, stop_cases=_stop_cases(load_tokenizer(str(tok_dir))),
    )


@pytest.fixture(scope="module")
def setup(assets: dict) -> dict:
    """`assets` plus the oracle's outputs (arrays under assets["out"], the rest under "result")."""
    return {**assets, "result": run_oracle(ORACLE_JOB, assets)}


@pytest.mark.parametrize("name", list(PROCESSORS))
@pytest.mark.parametrize("mode", ["pad", None])
def test_process_images_matches_original(setup: dict, name: str, mode: str | None) -> None:
    proc = load_image_processor(setup["processors"][name])
    images = [load_image(p) for p in setup["images"]]
    got = process_images(images, proc, SimpleNamespace(image_aspect_ratio=mode))
    want = torch.from_numpy(np.load(f"{setup['out']}/{name}_{mode}.npy"))
    assert got.shape == want.shape and got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=0, atol=1e-6), (got - want).abs().max()


@pytest.mark.parametrize("name", list(PROCESSORS))
def test_preprocess_single_matches_original(setup: dict, name: str) -> None:
    proc = load_image_processor(setup["processors"][name])
    got = proc.preprocess(load_image(setup["images"][1]), return_tensors="pt")["pixel_values"]
    want = torch.from_numpy(np.load(f"{setup['out']}/{name}_single.npy"))
    assert torch.allclose(got, want, rtol=0, atol=1e-6)
    side = PROCESSORS[name]["crop_size"]
    side = side if isinstance(side, int) else side["height"]
    assert proc.crop_size["height"] == side and list(proc.image_mean) == CLIP_MEAN


def test_expand2square_matches_original(setup: dict) -> None:
    for i, path in enumerate(setup["images"]):
        got = np.asarray(expand2square(load_image(path), (122, 116, 104)))
        assert np.array_equal(got, np.load(f"{setup['out']}/square_{i}.npy")), path


def test_expand2square_colour_and_placement() -> None:
    image = Image.new("RGB", (4, 2), (255, 0, 0))
    square = expand2square(image, (1, 2, 3))
    assert square.size == (4, 4)
    pixels = np.asarray(square)
    assert (pixels[0] == (1, 2, 3)).all() and (pixels[3] == (1, 2, 3)).all() and (pixels[1:3] == (255, 0, 0)).all()
    tall = np.asarray(expand2square(Image.new("RGB", (1, 3), (9, 9, 9)), (0, 0, 0)))
    assert (tall[:, 1] == 9).all() and (tall[:, 0] == 0).all() and (tall[:, 2] == 0).all()
    assert expand2square(image.resize((3, 3)), (0, 0, 0)).size == (3, 3)
    # 'pad' uses the processor's mean colour scaled to 0..255
    assert tuple(int(x * 255) for x in CLIP_MEAN) == (122, 116, 104)


def test_anyres_without_grid_pinpoints_is_a_clear_error(assets: dict) -> None:
    proc = load_image_processor(assets["processors"]["clip224"])
    with pytest.raises(ValueError, match="image_grid_pinpoints"):
        process_images([Image.new("RGB", (8, 8))], proc, SimpleNamespace(image_aspect_ratio="anyres"))


def test_model_names_match_original(setup: dict) -> None:
    assert [get_model_name_from_path(p) for p in MODEL_PATHS] == setup["result"]["names"]


def test_stopping_criteria_matches_original(setup: dict) -> None:
    tok = load_tokenizer(setup["tokenizer"])
    for case, want in zip(setup["stop_cases"], setup["result"]["stops"]):
        crit = KeywordsStoppingCriteria(case["keywords"], tok, torch.tensor([case["prompt"]]))
        got = crit(torch.tensor(case["rows"]), None)
        assert got.dtype == torch.bool and got.shape == (len(case["rows"]),)
        assert bool(got.all()) == want and bool(got.any()) == want, case["keywords"]


def test_stopping_criteria_on_generated_only_rows(assets: dict) -> None:
    # Generation from inputs_embeds: the rows hold only new tokens, shorter than the prompt.
    tok = load_tokenizer(assets["tokenizer"])
    prompt = torch.tensor([tok("USER: a long prompt with many words ASSISTANT:").input_ids])
    crit = KeywordsStoppingCriteria(["###"], tok, prompt)
    assert bool(crit(torch.tensor([tok("Red.###", add_special_tokens=False).input_ids]), None).all())
    assert not bool(crit(torch.tensor([tok("Red", add_special_tokens=False).input_ids]), None).any())


def test_tokenizer_image_token(assets: dict) -> None:
    tok = load_tokenizer(assets["tokenizer"])
    prompt = "USER: <image>\nWhat is it? ASSISTANT:"
    ids = tokenizer_image_token(prompt, tok)
    assert ids[0] == tok.bos_token_id and ids.count(IMAGE_TOKEN_INDEX) == 1 and ids.count(tok.bos_token_id) == 1
    tensor = tokenizer_image_token(prompt, tok, return_tensors="pt")
    assert tensor.dtype == torch.long and tensor.tolist() == ids
    assert tokenizer_image_token("<image>\n<image>", tok, image_token_index=-5).count(-5) == 2
    with pytest.raises(ValueError, match="return_tensors"):
        tokenizer_image_token(prompt, tok, return_tensors="np")


def test_load_image_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(missing)
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(str(corrupt))
    truncated = tmp_path / "truncated.png"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        load_image(truncated)


def test_load_image_converts_to_rgb(tmp_path: Path) -> None:
    for mode, colour in (("L", 7), ("RGBA", (1, 2, 3, 4)), ("P", 3)):
        path = tmp_path / f"x_{mode}.png"
        Image.new(mode, (5, 4), colour).save(path)
        image = load_image(path)
        assert image.mode == "RGB" and image.size == (5, 4)


def test_load_image_processor_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="preprocessor_config.json"):
        load_image_processor(tmp_path)


def test_load_image_processor_hub_id_from_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    commit = "1" * 40
    repo = tmp_path / "hub" / "models--openai--clip-tiny"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "preprocessor_config.json").write_text(json.dumps(PROCESSORS["clip336"]))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert load_image_processor("openai/clip-tiny").crop_size["height"] == 336
    with pytest.raises(FileNotFoundError, match="openai/not-cached"):
        load_image_processor("openai/not-cached")
