"""The shared prefix (one prefill per image, every question continued from it) equals the plain path, fp32.

Parametrised over every question-independent method of the registry (stage 'pre_llm', not reading the
question: CDPruner's refusal is in tests/pruning/test_cdpruner.py) plus no
pruning: greedy tokens identical and logits equal to round-off, on batches mixing several images
with several questions each, at batch sizes 1, 2 and 4; a resume in the middle of an image's
questions; LLaVA-NeXT; and the in-LLM fallback.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import GenerationArgs, VQAItem, build_prompt, group_by_image, run_vqa
from llava.model.shared_prefix import PrefixStore, common_prefix_length, generate_shared
from llava.pruning import get_method, list_methods
from llava.pruning.config import PruningConfig

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
IMAGES = ["shapes.png", "stripes.png", "scene.png"]
QUESTIONS = ["What is in the image?", "How many objects are there in total in this picture?", "Color?",
             "Is there a cat?", "Describe the picture briefly, please."]
PRE_LLM = [m for m in list_methods() if get_method(m).stage == "pre_llm" and not get_method(m).question_dependent]
# (method, K): no pruning, and every question-independent method at a budget of 24 of 576
SETTINGS = [("fastervlm", None)] + [(m, 24) for m in PRE_LLM]


def _items(n: int = 8) -> list[VQAItem]:
    """n questions over the three sample images, images interleaved (the runner groups them)."""
    return [VQAItem(f"q{i}", QUESTIONS[i % len(QUESTIONS)], [IMAGES[i % 3]]) for i in range(n)]


def _answers(model, tok, proc, items, path, share, batch_size=2, **kw):
    gen = GenerationArgs(temperature=0, max_new_tokens=5)
    files = {k: str(p) for k, p in path.items()} if isinstance(path, dict) else str(path)
    run_vqa(model, tok, proc, items, files, "vicuna_v1", gen, "tiny", image_folder=str(SAMPLES),
            batch_size=batch_size, share_prefix=share, **kw)
    paths = list(path.values()) if isinstance(path, dict) else [path]
    return [json.loads(line) for p in paths for line in Path(p).read_text().splitlines()]


def _batch(model, tok, proc, pairs):
    """Left-padded input_ids/mask and pixels for (image index, question) pairs."""
    from PIL import Image

    from llava.mm_utils import process_images, tokenizer_image_token

    ids = [tokenizer_image_token(build_prompt(q, "vicuna_v1", True), tok, IMAGE_TOKEN_INDEX, return_tensors="pt")
           for _, q in pairs]
    width = max(len(x) for x in ids)
    input_ids = torch.zeros(len(ids), width, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for b, x in enumerate(ids):
        input_ids[b, width - len(x):], mask[b, width - len(x):] = x, 1
    images = [Image.open(SAMPLES / IMAGES[i]).convert("RGB") for i, _ in pairs]
    return input_ids, mask, process_images(images, proc, model.config)


@pytest.mark.parametrize("method,k", SETTINGS, ids=[f"{m}-{k}" for m, k in SETTINGS])
def test_logits_and_tokens_equal_the_plain_path(tiny, method, k):
    tok, model, proc, _ = tiny
    pairs = [(0, QUESTIONS[0]), (1, QUESTIONS[1]), (0, QUESTIONS[2]), (1, QUESTIONS[3])]  # 2 images x 2
    input_ids, mask, pixels = _batch(model, tok, proc, pairs)
    cfg = PruningConfig(method=method, visual_token_num=k)
    kw = dict(do_sample=False, max_new_tokens=5, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    signals = model.vision_signals(pixels, pruning=cfg)
    plain = model.generate(input_ids, attention_mask=mask, vision_signals=signals, pruning=cfg, **kw)
    store = PrefixStore()
    shared = generate_shared(model, input_ids, mask, [("img", i) for i, _ in pairs], store,
                             vision_signals=signals, pruning=cfg, **kw)
    assert store.computed == 2  # one prefix per image
    assert torch.equal(plain.sequences, shared.sequences)
    for a, b in zip(plain.scores, shared.scores, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)
    # the stored prefixes are reused by a later batch of the same images: nothing is prefilled again
    again = generate_shared(model, input_ids[[1, 0]], mask[[1, 0]], [("img", 1), ("img", 0)], store,
                            vision_signals=signals.index([1, 0]), pruning=cfg, **kw)
    assert store.computed == 2 and torch.equal(again.sequences, plain.sequences[[1, 0]])


def test_common_prefix_is_computed_not_assumed():
    a = torch.arange(12.0).reshape(6, 2)
    b = a.clone()
    b[4] += 1
    assert common_prefix_length([a, b]) == 4
    assert common_prefix_length([a, a[:3]]) == 3 and common_prefix_length([a]) == 6


@pytest.mark.parametrize("method,k", SETTINGS, ids=[f"{m}-{k}" for m, k in SETTINGS])
def test_runner_answers_equal_the_plain_path(tiny, tmp_path, method, k):
    tok, model, proc, _ = tiny
    items = _items(7)
    with model.pruning_config(PruningConfig(method=method, visual_token_num=k)):
        plain = _answers(model, tok, proc, items, tmp_path / "plain.jsonl", share=False, batch_size=4)
        shared = _answers(model, tok, proc, items, tmp_path / "shared.jsonl", share=True, batch_size=4)
    assert [(a["question_id"], a["text"]) for a in shared] == [(a["question_id"], a["text"]) for a in plain]
    assert {a["metadata"]["shared_prefix"] for a in shared} == {True}
    assert {a["metadata"]["shared_prefix"] for a in plain} == {False}


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_batch_sizes_and_a_resume_inside_an_image(tiny, tmp_path, batch_size):
    tok, model, proc, _ = tiny
    items = _items(7)
    with model.pruning_config(PruningConfig(method="fastervlm", visual_token_num=58)):
        plain = _answers(model, tok, proc, items, tmp_path / "plain.jsonl", share=False, batch_size=batch_size)
        # a first run stops after two of shapes.png's three questions; the resumed run answers the rest
        path = tmp_path / "shared.jsonl"
        first = group_by_image(items)[:2]
        assert {it.images[0] for it in first} == {"shapes.png"}
        _answers(model, tok, proc, first, path, share=True, batch_size=batch_size)
        shared = _answers(model, tok, proc, items, path, share=True, batch_size=batch_size)
    assert len(shared) == len(items) == len({a["question_id"] for a in shared})  # nothing answered twice
    want = {a["question_id"]: a["text"] for a in plain}
    assert {a["question_id"]: a["text"] for a in shared} == want


def test_one_vision_pass_per_image(tiny, tmp_path, monkeypatch):
    tok, model, proc, _ = tiny
    calls = []
    real = model.vision_signals

    def counting(images, **kw):
        calls.append(images.shape[0])
        return real(images, **kw)

    monkeypatch.setattr(model, "vision_signals", counting)
    items = _items(9)
    with model.pruning_config(PruningConfig(method="fastervlm", visual_token_num=58)):
        answers = _answers(model, tok, proc, items, {58: tmp_path / "a58.jsonl", 24: tmp_path / "a24.jsonl"},
                           share=True, batch_size=2)
    assert len(answers) == 18 and {a["metadata"]["visual_tokens"] for a in answers} == {58, 24}
    assert sum(calls) == 3  # three distinct images, whatever the batches and budgets
    calls.clear()
    with model.pruning_config(PruningConfig(method="fastervlm", visual_token_num=58)):
        _answers(model, tok, proc, items, tmp_path / "nocache.jsonl", share=False, batch_size=2, vision_cache_size=0)
    assert sum(calls) == 9  # --vision-cache-size 0: every question runs the tower on its image


def test_in_llm_methods_take_the_plain_path(tiny, tmp_path):
    tok, model, proc, _ = tiny
    with model.pruning_config(PruningConfig(method="fastv", visual_token_num=58)):
        shared = _answers(model, tok, proc, _items(4), tmp_path / "fastv.jsonl", share=True)
        plain = _answers(model, tok, proc, _items(4), tmp_path / "fastv_plain.jsonl", share=False)
    assert {a["metadata"]["shared_prefix"] for a in shared} == {False}
    assert [a["text"] for a in shared] == [a["text"] for a in plain]


@pytest.mark.parametrize("k", [None, 40])
def test_llava_next_shares_too(next_model, tmp_path, k):
    tok, model, proc, _ = next_model
    items = _items(6)
    with model.pruning_config(PruningConfig(method="fastervlm", visual_token_num=k)):
        plain = _answers(model, tok, proc, items, tmp_path / "plain.jsonl", share=False, batch_size=3)
        shared = _answers(model, tok, proc, items, tmp_path / "shared.jsonl", share=True, batch_size=3)
    assert [a["text"] for a in shared] == [a["text"] for a in plain]
    assert {a["metadata"]["shared_prefix"] for a in shared} == {True}
