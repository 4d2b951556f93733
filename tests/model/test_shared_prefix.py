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

from llava.eval.runner import GenerationArgs, VQAItem, _collate, _PromptDataset, group_by_image, run_vqa
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
    """Left-padded input_ids/mask, pixel rows and image sizes for (image index, question) pairs, built by
    the runner's own dataset and collate (anyres: every view a row)."""
    items = [VQAItem(f"q{n}", q, [IMAGES[i]]) for n, (i, q) in enumerate(pairs)]
    dataset = _PromptDataset(items, tok, proc, model.config, "vicuna_v1", str(SAMPLES), model.pruning.anyres_mode)
    _, input_ids, mask, pixels, sizes, spans = _collate(0)([dataset[n] for n in range(len(items))])
    return input_ids, mask, pixels, [s for group in sizes for s in group], spans


FAMILIES = ["tiny", "next_model"]  # LLaVA-1.5 and LLaVA-NeXT (anyres)
IMAGE_OF_ROW = [0, 1, 0, 1]  # two images with two questions each
# the shared path's batches, as rows of the plain batch: one question; one image with two; all four
SHARED_BATCHES = [[0], [0, 2], [0, 1, 2, 3]]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method,k", SETTINGS, ids=[f"{m}-{k}" for m, k in SETTINGS])
def test_logits_and_tokens_equal_the_plain_path(request, family, method, k):
    """At batch sizes 1, 2 and 4 the shared path's tokens equal the plain path's and its logits agree to round-off."""
    tok, model, proc, _ = request.getfixturevalue(family)
    pairs = [(i, QUESTIONS[n]) for n, i in enumerate(IMAGE_OF_ROW)]
    input_ids, mask, pixels, sizes, spans = _batch(model, tok, proc, pairs)
    cfg = PruningConfig(method=method, visual_token_num=k, anyres_mode=model.pruning.anyres_mode)
    kw = dict(do_sample=False, max_new_tokens=3, pad_token_id=0, output_scores=True, return_dict_in_generate=True,
              pruning=cfg)
    signals = model.vision_signals(pixels, pruning=cfg)
    plain = model.generate(input_ids, attention_mask=mask, vision_signals=signals, image_sizes=sizes, **kw)
    for rows in SHARED_BATCHES:
        store = PrefixStore()
        views = [j for r in rows for j in range(sum(spans[:r]), sum(spans[:r + 1]))]  # every view of each row
        ids, row_mask = input_ids[rows], mask[rows]
        width = int(row_mask.sum(1).max())  # as the runner's collate pads them: to the longest row
        shared = generate_shared(model, ids[:, -width:], row_mask[:, -width:], [("img", pairs[r][0]) for r in rows],
                                 store, vision_signals=signals.index(views), image_sizes=[sizes[r] for r in rows], **kw)
        assert store.computed == len({pairs[r][0] for r in rows})  # one prefix per image
        assert torch.equal(shared.sequences, plain.sequences[rows]), f"batch of {len(rows)}"
        for a, b in zip(plain.scores, shared.scores, strict=True):
            torch.testing.assert_close(b, a[rows], rtol=1e-4, atol=1e-4)
    # the stored prefixes are reused by a later batch of the same images (reversed): nothing is prefilled again
    back = [3, 2, 1, 0]
    views = [j for r in back for j in range(sum(spans[:r]), sum(spans[:r + 1]))]
    again = generate_shared(model, input_ids[back], mask[back], [("img", pairs[r][0]) for r in back], store,
                            vision_signals=signals.index(views), image_sizes=[sizes[r] for r in back], **kw)
    assert store.computed == 2 and torch.equal(again.sequences, plain.sequences[back])


@pytest.mark.parametrize("family", FAMILIES)
def test_position_mode_keep_shares_its_prefix_at_the_unpruned_positions(request, family):
    """Under position_mode='keep' (positions with gaps) the shared path equals the plain path too, and both differ
    from compact (so the positions really reach the cached prefix and the suffix)."""
    tok, model, proc, _ = request.getfixturevalue(family)
    pairs = [(i, QUESTIONS[n]) for n, i in enumerate(IMAGE_OF_ROW)]
    input_ids, mask, pixels, sizes, spans = _batch(model, tok, proc, pairs)
    cfg = PruningConfig(visual_token_num=24, anyres_mode=model.pruning.anyres_mode, position_mode="keep")
    kw = dict(do_sample=False, max_new_tokens=3, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    signals = model.vision_signals(pixels, pruning=cfg)
    plain = model.generate(input_ids, attention_mask=mask, vision_signals=signals, image_sizes=sizes, pruning=cfg,
                           **kw)
    compact = model.generate(input_ids, attention_mask=mask, vision_signals=signals, image_sizes=sizes,
                             pruning=cfg.replace(position_mode="compact"), **kw)
    assert not torch.allclose(compact.scores[0], plain.scores[0], atol=1e-4)
    store = PrefixStore()
    shared = generate_shared(model, input_ids, mask, [("img", i) for i, _ in pairs], store, vision_signals=signals,
                             image_sizes=sizes, pruning=cfg, **kw)
    assert store.computed == 2 and torch.equal(shared.sequences, plain.sequences)
    for a, b in zip(plain.scores, shared.scores, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


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
@pytest.mark.parametrize("family", FAMILIES)
def test_batch_sizes_and_a_resume_inside_an_image(request, tmp_path, family, batch_size):
    tok, model, proc, _ = request.getfixturevalue(family)
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


def test_an_image_is_decoded_once_while_its_tower_output_is_held(tiny, tmp_path, monkeypatch):
    """Later questions about an image skip decoding and preprocessing; with the cache off each one decodes."""
    import llava.mm_utils

    tok, model, proc, _ = tiny
    opened = []
    real = llava.mm_utils.load_image

    def counting(path):
        opened.append(Path(path).name)
        return real(path)

    monkeypatch.setattr(llava.mm_utils, "load_image", counting)
    items = _items(9)
    with model.pruning_config(PruningConfig(method="fastervlm", visual_token_num=58)):
        shared = _answers(model, tok, proc, items, tmp_path / "shared.jsonl", share=True, batch_size=2)
        assert sorted(opened) == sorted(IMAGES)  # three images, nine questions: three decodes
        opened.clear()
        plain = _answers(model, tok, proc, items, tmp_path / "plain.jsonl", share=False, batch_size=2,
                         vision_cache_size=0)
    assert len(opened) == 9
    assert [(a["question_id"], a["text"]) for a in shared] == [(a["question_id"], a["text"]) for a in plain]


def test_next_reuses_the_anyres_views_without_decoding(next_model, tmp_path, monkeypatch):
    import llava.mm_utils

    tok, model, proc, _ = next_model
    opened = []
    real = llava.mm_utils.load_image
    monkeypatch.setattr(llava.mm_utils, "load_image", lambda path: opened.append(path) or real(path))
    items = _items(5)
    with model.pruning_config(PruningConfig(method="fastervlm", visual_token_num=40)):
        shared = _answers(model, tok, proc, items, tmp_path / "shared.jsonl", share=True, batch_size=2)
        assert len(opened) == 3
        plain = _answers(model, tok, proc, items, tmp_path / "plain.jsonl", share=False, batch_size=2,
                         vision_cache_size=0)
    assert [a["text"] for a in shared] == [a["text"] for a in plain]
    assert [a["metadata"]["visual_tokens"] for a in shared] == [a["metadata"]["visual_tokens"] for a in plain]


def test_an_image_with_one_question_takes_the_plain_path(tiny, tmp_path):
    """Nothing to share: the question is answered by the plain path, and its record says so."""
    tok, model, proc, _ = tiny
    items = _items(3) + [VQAItem("q3", QUESTIONS[3], [IMAGES[0]])]  # shapes: 2 questions, the others 1
    with model.pruning_config(PruningConfig(method="fastervlm", visual_token_num=58)):
        shared = _answers(model, tok, proc, items, tmp_path / "shared.jsonl", share=True, batch_size=4)
        plain = _answers(model, tok, proc, items, tmp_path / "plain.jsonl", share=False, batch_size=4)
    assert {a["question_id"]: a["metadata"]["shared_prefix"] for a in shared} == {
        "q0": True, "q3": True, "q1": False, "q2": False}
    assert [(a["question_id"], a["text"]) for a in shared] == [(a["question_id"], a["text"]) for a in plain]


def test_prefix_caches_are_kept_only_for_the_image_that_goes_on(tiny, tmp_path, monkeypatch):
    """A K sweep of 2, batch 2, 3 images x 3 questions: at most 2 caches per K held, none computed twice."""
    import llava.model.shared_prefix as sp

    tok, model, proc, _ = tiny
    stores = []

    class Recording(sp.PrefixStore):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.between = []  # caches held when each batch starts
            stores.append(self)

        def retain(self, keep):
            super().retain(keep)
            self.between.append(len(self))

    monkeypatch.setattr(sp, "PrefixStore", Recording)
    items = _items(9)  # grouped: shapes x3, stripes x3, scene x3 -> batches [s s] [s t] [t t] [c c] [c]
    with model.pruning_config(PruningConfig(method="fastervlm", visual_token_num=58)):
        answers = _answers(model, tok, proc, items, {58: tmp_path / "a58.jsonl", 24: tmp_path / "a24.jsonl"},
                           share=True, batch_size=2)
    assert len(answers) == 18 and all(a["metadata"]["shared_prefix"] for a in answers)
    store = stores[0]
    assert store.computed == 3 * 2  # one prefix per image and K
    assert store.between == [0, 2, 2, 0, 2]  # the carried image's prefix, one per K
    assert store.peak == 4  # batch [s t]: shapes' (carried in) and stripes' (carried on), per K
