"""The image drivers on the tiny Qwen2.5-VL and Qwen3-VL checkpoints (our `tiny` builders).

No budget: `run_vqa` in batches of 3 gives transformers' greedy tokens exactly (one question at a
time, the same chat-template prompt), and `model_vqa_loader` / `model_vqa_science` write the same
answers. `--visual-token-num 64` and `--visual-token-ratio 0.5`: every record keeps at most its
budget per image and records N_i; a text-only question is mixed in throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image

import independent_checkpoints as ic
from family_driver_checks import (COMMON, MAX_NEW, QUESTIONS, check_budget, check_unpruned, read_answers,
                                  reference_answers, write_inputs)

FAMILIES = {
    "qwen2_5_vl": ("llava.model.family_qwen2_5_vl", "save_tiny_qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration"),
    "qwen3_vl": ("llava.model.family_qwen3_vl", "save_tiny_qwen3_vl", "Qwen3VLForConditionalGeneration"),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def tiny_qwen(request, tmp_path_factory):
    import importlib

    module, builder, cls_name = FAMILIES[request.param]
    folder = getattr(importlib.import_module(module), builder)(tmp_path_factory.mktemp(request.param) / "tiny")
    work = tmp_path_factory.mktemp(request.param + "_inputs")
    images, qfile = write_inputs(work)
    return request.param, Path(folder), getattr(transformers, cls_name), images, qfile


@pytest.fixture(scope="module")
def reference_with_logits(tiny_qwen) -> tuple[dict, dict]:
    """transformers' greedy tokens and step logits per question on the tiny checkpoint (once per family)."""
    _, folder, hf_class, images, _ = tiny_qwen
    logits: dict = {}
    return reference_answers(folder, hf_class, ic.reference_inputs, images, logits), logits


@pytest.fixture(scope="module")
def reference(reference_with_logits) -> dict[int, list[int]]:
    return reference_with_logits[0]


def test_the_family_has_an_inputs_builder(tiny_qwen):
    from llava.eval.runner import model_family
    from llava.model.inputs_builder import ProcessorInputs, get_inputs_builder

    family, folder, *_ = tiny_qwen
    assert model_family(str(folder)) == family
    assert isinstance(get_inputs_builder(family), ProcessorInputs)


def test_batched_run_vqa_tokens_equal_transformers(tiny_qwen, reference_with_logits):
    from llava.eval.runner import GenerationArgs, VQAItem, run_vqa
    from llava.model.builder import load_pretrained_model
    from llava.model.inputs_builder import get_inputs_builder

    family, folder, _, images, _ = tiny_qwen
    want, want_logits = reference_with_logits
    tokenizer, model, processor, _ = load_pretrained_model(str(folder), device="cpu")
    items = [VQAItem(q["question_id"], q["text"], [q["image"]] if "image" in q else []) for q in QUESTIONS]
    got, logits = {}, {}

    def keep(key, k, tokens, step_logits):
        got[key[0]] = tokens.tolist()
        logits[key[0]] = step_logits

    written = run_vqa(model, tokenizer, processor, items, str(folder.parent / "tokens.jsonl"), None,
                      GenerationArgs(temperature=0, max_new_tokens=MAX_NEW), family, image_folder=str(images),
                      batch_size=3, resume=False, inputs_builder=get_inputs_builder(family), on_generated=keep)
    assert written == len(QUESTIONS)
    for q in QUESTIONS:
        mine = got[str(q["question_id"])]
        ref = want[q["question_id"]]
        while mine and mine[-1] == tokenizer.pad_token_id and len(mine) > len(ref):
            mine.pop()  # a row that ended before the batch did
        assert mine == ref, q["question_id"]
        step = logits[str(q["question_id"])]  # [MAX_NEW, V]; rows past the row's eos are the batch's
        assert step.shape[0] == MAX_NEW and step[:len(ref)].argmax(-1).tolist() == ref
        torch.testing.assert_close(step[:len(ref)], want_logits[q["question_id"]], atol=2e-5, rtol=1e-4)


def test_loader_driver_unpruned_answers_equal_transformers(tiny_qwen, reference, tmp_path):
    _, folder, hf_class, _, _ = tiny_qwen
    answers = check_unpruned(folder, hf_class, ic.reference_inputs, tmp_path, want=reference)
    counts = {a["question_id"]: a["metadata"]["visual_tokens"] for a in answers if a["question_id"] != 3}
    assert len(set(counts.values())) >= 3  # the images' sizes give different N_i


def test_loader_driver_k64(tiny_qwen, tmp_path):
    _, folder, *_ = tiny_qwen
    answers = check_budget(folder, tmp_path, k=64)
    unpruned = [a["metadata"]["visual_tokens_unpruned"] for a in answers if a["question_id"] != 3]
    assert max(unpruned) > 64 and min(unpruned) < 64  # some images pruned, one kept whole


def test_loader_driver_k_sweep_one_file_per_k(tiny_qwen, tmp_path):
    from family_driver_checks import run_loader

    _, folder, _, images, qfile = tiny_qwen
    run_loader(folder, qfile, images, tmp_path / "s{k}.jsonl", "--visual-token-num", "64,16", "--batch-size", "3")
    for k in (64, 16):
        answers = read_answers(tmp_path / f"s{k}.jsonl")
        assert sorted(a["question_id"] for a in answers) == [q["question_id"] for q in QUESTIONS]
        for a in answers:
            meta = a["metadata"]
            assert meta["visual_token_num"] == k
            if a["question_id"] != 3:
                assert meta["visual_token_budget"] == k and meta["visual_tokens"] == min(k, meta["visual_tokens_unpruned"])


def test_loader_driver_kept_fraction(tiny_qwen, tmp_path):
    _, folder, *_ = tiny_qwen
    answers = check_budget(folder, tmp_path, ratio=0.5)
    assert all(a["metadata"]["visual_token_ratio"] == 0.5 for a in answers)


def test_science_driver_with_and_without_budget(tiny_qwen, tmp_path):
    """model_vqa_science: the unpruned answer equals transformers'; at K = 64 the record holds <= 64 tokens."""
    from transformers import AutoTokenizer

    from family_driver_checks import chat_prompt, folder_template
    from llava.eval import model_vqa_science

    _, folder, hf_class, images, _ = tiny_qwen
    question = "What is shown?\nA. a circle\nB. a dog"
    problems = [{"id": "1", "image": "tall.png", "conversations": [{"from": "human", "value": "<image>\n" + question}]},
                {"id": "2", "conversations": [{"from": "human", "value": "Which is a fruit?\nA. apple\nB. brick"}]}]
    (tmp_path / "sqa.json").write_text(json.dumps(problems))
    for flags, name in (([], "all"), (["--visual-token-num", "64"], "k64")):
        model_vqa_science.main(["--model-path", str(folder), "--question-file", str(tmp_path / "sqa.json"),
                                "--image-folder", str(images), "--answers-file", str(tmp_path / f"{name}.jsonl"),
                                "--single-pred-prompt", *flags, *COMMON])
    unpruned, pruned = read_answers(tmp_path / "all.jsonl"), read_answers(tmp_path / "k64.jsonl")
    assert [a["question_id"] for a in unpruned] == ["1", "2"]
    assert pruned[0]["metadata"]["visual_tokens"] <= 64 < pruned[0]["metadata"]["visual_tokens_unpruned"]
    assert pruned[1]["metadata"]["visual_tokens"] == []
    # the unpruned image answer against transformers, on the prompt the driver built (its question text)
    tok = AutoTokenizer.from_pretrained(str(folder))
    text = unpruned[0]["prompt"].removeprefix("<image>\n")  # the record's prompt marks the image as LLaVA's does
    assert text.startswith(question + "\n")  # ... then the letter instruction
    prompt = chat_prompt(tok, folder_template(folder, tok), text, True)
    model = hf_class.from_pretrained(str(folder)).eval()
    inputs = ic.reference_inputs(folder, prompt, [Image.open(images / "tall.png").convert("RGB")])
    with torch.no_grad():
        seq = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    assert unpruned[0]["text"] == tok.decode(seq, skip_special_tokens=True).strip()


def test_mmbench_driver_at_k64(tiny_qwen, tmp_path):
    """model_vqa_mmbench (base64 images in a TSV, decoded lazily): at most 64 tokens, N_i recorded."""
    import base64
    import io

    import pandas as pd

    from llava.eval import model_vqa_mmbench

    _, folder, _, images, _ = tiny_qwen
    buf = io.BytesIO()
    Image.open(images / "strip.png").save(buf, format="PNG")
    row = {"index": 5, "question": "What shape is red?", "hint": "nan", "A": "circle", "B": "square", "C": "nan",
           "D": "nan", "answer": "A", "image": base64.b64encode(buf.getvalue()).decode(), "category": "c",
           "split": "dev"}
    pd.DataFrame([row]).to_csv(tmp_path / "mmb.tsv", sep="\t", index=False)
    model_vqa_mmbench.main(["--model-path", str(folder), "--question-file", str(tmp_path / "mmb.tsv"),
                            "--answers-file", str(tmp_path / "mmb.jsonl"), "--single-pred-prompt",
                            "--visual-token-num", "64", *COMMON])
    (record,) = read_answers(tmp_path / "mmb.jsonl")
    meta = record["metadata"]
    assert meta["visual_tokens"] == 64 < meta["visual_tokens_unpruned"] and meta["visual_token_budget"] == 64
