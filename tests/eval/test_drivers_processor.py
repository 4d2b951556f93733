"""The image drivers on a processor family (the tiny LLaVA-OneVision): chat-template prompts, budgets, batching.

Answers without a budget are checked token for token against transformers' own
`LlavaOnevisionForConditionalGeneration.generate` on the same chat-template prompt; budgets are checked
in every answer's metadata (K, the kept fraction, N_i); bad budget flags fail with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import LlavaOnevisionForConditionalGeneration

from llava.model.family_onevision import save_tiny_onevision

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
COMMON = ["--temperature", "0", "--max_new_tokens", "5", "--device", "cpu"]
SUFFIX = "\nAnswer the question using a single word or phrase."
QUESTIONS = [
    {"question_id": 1, "image": "shapes.png", "text": "what is here ?" + SUFFIX},
    {"question_id": 2, "image": "stripes.png", "text": "describe this"},
    {"question_id": 3, "text": "what is the image ?"},  # text-only
    {"question_id": 4, "image": "shapes.png", "text": "describe the image"},
]


@pytest.fixture(scope="module")
def ov_path(tmp_path_factory) -> str:
    return str(save_tiny_onevision(tmp_path_factory.mktemp("ov") / "tiny", vision_aspect_ratio="anyres_max_2"))


@pytest.fixture(scope="module")
def qfile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("q") / "questions.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


@pytest.fixture(scope="module")
def reference(ov_path):
    from llava.vision_compat import load_processor

    return LlavaOnevisionForConditionalGeneration.from_pretrained(ov_path).eval(), load_processor(ov_path)


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _chat_prompt(processor, question: str, with_image: bool) -> str:
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def _reference_tokens(reference, prompt: str, image: str | None, new: int = 5) -> list[int]:
    """transformers' greedy new tokens for one prompt (its eos included, nothing after it)."""
    model, processor = reference
    images = [Image.open(SAMPLES / image).convert("RGB")] if image else None
    inputs = processor(images=images, text=[prompt], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=new, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def _run_loader(ov_path, qfile, answers, *flags):
    from llava.eval.model_vqa_loader import main

    main(["--model-path", ov_path, "--question-file", str(qfile), "--image-folder", str(SAMPLES),
          "--answers-file", str(answers), "--allow-text-only", *COMMON, *flags])
    return None if "{k}" in str(answers) else _lines(answers)


def test_the_registry_gives_onevision_a_builder_and_llava_none():
    from llava.model.inputs_builder import ProcessorInputs, get_inputs_builder, register_inputs_builder

    assert isinstance(get_inputs_builder("llava-onevision"), ProcessorInputs)
    assert get_inputs_builder("llava") is None
    with pytest.raises(ValueError, match="'llava-onevision' is registered twice"):
        register_inputs_builder("llava-onevision", ProcessorInputs())


def test_unpruned_batched_answers_equal_transformers_token_for_token(ov_path, reference):
    """run_vqa in batches of 3 (a text-only row among them) against transformers one question at a time."""
    from llava.eval.runner import GenerationArgs, VQAItem, run_vqa
    from llava.model.builder import load_pretrained_model
    from llava.model.inputs_builder import get_inputs_builder

    tokenizer, model, processor, _ = load_pretrained_model(ov_path, device="cpu")
    items = [VQAItem(q["question_id"], q["text"], [q["image"]] if "image" in q else []) for q in QUESTIONS]
    got = {}
    written = run_vqa(model, tokenizer, processor, items, str(Path(ov_path).parent / "tok.jsonl"), None,
                      GenerationArgs(temperature=0, max_new_tokens=5), "ov", image_folder=str(SAMPLES),
                      batch_size=3, resume=False, inputs_builder=get_inputs_builder("llava-onevision"),
                      on_generated=lambda key, k, tokens, logits: got.update({key[0]: tokens.tolist()}))
    assert written == 4
    pad = tokenizer.pad_token_id
    for q in QUESTIONS:
        prompt = _chat_prompt(reference[1], q["text"], "image" in q)
        want = _reference_tokens(reference, prompt, q.get("image"))
        mine = got[str(q["question_id"])]
        while mine and mine[-1] == pad and len(mine) > len(want):
            mine.pop()
        assert mine == want, q["question_id"]


def test_loader_driver_unpruned_answers_and_records(ov_path, qfile, reference, tmp_path):
    answers = _run_loader(ov_path, qfile, tmp_path / "a.jsonl", "--batch-size", "2")
    assert [a["question_id"] for a in answers] == [1, 4, 2, 3]  # grouped by image, in order of first appearance
    tokenizer = reference[1].tokenizer
    for a in answers:
        q = next(q for q in QUESTIONS if q["question_id"] == a["question_id"])
        assert a["prompt"] == q["text"]  # the question as LLaVA records it, suffix included
        want = _reference_tokens(reference, _chat_prompt(reference[1], q["text"], "image" in q), q.get("image"))
        assert a["text"] == tokenizer.decode(want, skip_special_tokens=True).strip()
        meta = a["metadata"]
        assert meta["conv_mode"] is None and meta["visual_token_num"] is None and meta["shared_prefix"] is False
        if "image" in q:
            assert meta["visual_tokens"] == meta["visual_tokens_unpruned"] > 729 and meta["visual_token_budget"] is None
        else:
            assert meta["visual_tokens"] == meta["visual_tokens_unpruned"] == []


def test_loader_driver_at_k64_and_resume(ov_path, qfile, tmp_path):
    first = tmp_path / "q2.jsonl"
    first.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS[:2]))
    _run_loader(ov_path, first, tmp_path / "k.jsonl", "--visual-token-num", "64")
    answers = _run_loader(ov_path, qfile, tmp_path / "k.jsonl", "--visual-token-num", "64", "--batch-size", "3")
    fresh = _run_loader(ov_path, qfile, tmp_path / "fresh.jsonl", "--visual-token-num", "64", "--batch-size", "3")
    assert sorted(a["question_id"] for a in answers) == [1, 2, 3, 4]
    by_id = {a["question_id"]: a["text"] for a in fresh}
    assert {a["question_id"]: a["text"] for a in answers} == by_id  # resumed == fresh, batched == one by one
    for a in answers:
        meta = a["metadata"]
        assert meta["visual_token_num"] == 64
        if a["question_id"] != 3:
            assert meta["visual_tokens"] <= 64 and meta["visual_token_budget"] == 64
            assert meta["visual_tokens_unpruned"] > 64


def test_loader_driver_kept_fraction(ov_path, qfile, tmp_path):
    answers = _run_loader(ov_path, qfile, tmp_path / "r.jsonl", "--visual-token-ratio", "0.25", "--batch-size", "4")
    for a in answers:
        meta = a["metadata"]
        assert meta["visual_token_ratio"] == 0.25 and meta["visual_token_num"] is None
        if a["question_id"] != 3:
            n = meta["visual_tokens_unpruned"]
            assert meta["visual_token_budget"] == round(0.25 * n)
            assert meta["visual_token_budget"] - 1 <= meta["visual_tokens"] <= meta["visual_token_budget"]  # fastervlm fits K or K-1
    with pytest.raises(ValueError, match="visual_token_ratio=0.25, this run asks for 0.5"):
        _run_loader(ov_path, qfile, tmp_path / "r.jsonl", "--visual-token-ratio", "0.5")


def test_a_k_sweep_writes_one_file_per_k(ov_path, qfile, tmp_path):
    _run_loader(ov_path, qfile, tmp_path / "s{k}.jsonl", "--visual-token-num", "64,300", "--batch-size", "2")
    for k in (64, 300):
        answers = _lines(tmp_path / f"s{k}.jsonl")
        assert len(answers) == 4
        for a in answers:
            assert a["metadata"]["visual_token_num"] == k
            if a["question_id"] != 3:
                assert a["metadata"]["visual_token_budget"] == k and a["metadata"]["visual_tokens"] <= k


def test_conv_mode_builds_llava_prompts_with_the_processors_image_token(ov_path, qfile, reference, tmp_path):
    from llava.conversation import conv_templates

    mode = "chatml_direct"  # ChatML, as Qwen2 speaks it
    answers = _run_loader(ov_path, qfile, tmp_path / "c.jsonl", "--conv-mode", mode)
    a = next(a for a in answers if a["question_id"] == 1)
    conv = conv_templates[mode].copy()
    conv.append_message(conv.roles[0], "<image>\n" + QUESTIONS[0]["text"])
    conv.append_message(conv.roles[1], None)
    want = _reference_tokens(reference, conv.get_prompt(), "shapes.png")
    assert a["metadata"]["conv_mode"] == mode
    assert a["text"] == reference[1].tokenizer.decode(want, skip_special_tokens=True).strip()


def test_science_and_mmbench_and_open_ended_drivers_take_onevision(ov_path, tmp_path):
    import base64
    import io

    import pandas as pd

    from llava.eval import model_vqa, model_vqa_mmbench, model_vqa_science

    problems = [{"id": "1", "image": "shapes.png", "conversations": [
                    {"from": "human", "value": "<image>\nWhat is shown?\nA. a circle\nB. a dog"}]},
                {"id": "2", "conversations": [{"from": "human", "value": "Which is a fruit?\nA. apple\nB. brick"}]}]
    (tmp_path / "sqa.json").write_text(json.dumps(problems))
    model_vqa_science.main(["--model-path", ov_path, "--question-file", str(tmp_path / "sqa.json"),
                            "--image-folder", str(SAMPLES), "--answers-file", str(tmp_path / "sqa.jsonl"),
                            "--single-pred-prompt", "--visual-token-num", "64", *COMMON])
    sqa = _lines(tmp_path / "sqa.jsonl")
    assert [a["question_id"] for a in sqa] == ["1", "2"]
    assert sqa[0]["metadata"]["visual_tokens"] <= 64 and sqa[1]["metadata"]["visual_tokens"] == []

    buf = io.BytesIO()
    Image.open(SAMPLES / "shapes.png").save(buf, format="PNG")
    row = {"index": 5, "question": "What shape is red?", "hint": "nan", "A": "circle", "B": "square", "C": "nan",
           "D": "nan", "answer": "A", "image": base64.b64encode(buf.getvalue()).decode(), "category": "c",
           "split": "dev"}
    pd.DataFrame([row]).to_csv(tmp_path / "mmb.tsv", sep="\t", index=False)
    model_vqa_mmbench.main(["--model-path", ov_path, "--question-file", str(tmp_path / "mmb.tsv"),
                            "--answers-file", str(tmp_path / "mmb.jsonl"), "--single-pred-prompt",
                            "--visual-token-ratio", "0.5", *COMMON])
    (mmb,) = _lines(tmp_path / "mmb.jsonl")
    assert mmb["metadata"]["visual_token_budget"] == round(0.5 * mmb["metadata"]["visual_tokens_unpruned"])

    (tmp_path / "open.jsonl").write_text(json.dumps({"question_id": "a", "image": "scene.png",
                                                     "text": "describe this"}) + "\n")
    model_vqa.main(["--model-path", ov_path, "--question-file", str(tmp_path / "open.jsonl"),
                    "--image-folder", str(SAMPLES), "--answers-file", str(tmp_path / "open_a.jsonl"), *COMMON])
    (opened,) = _lines(tmp_path / "open_a.jsonl")
    assert opened["metadata"]["visual_tokens"] == opened["metadata"]["visual_tokens_unpruned"]


@pytest.mark.parametrize("flags, message", [
    (["--visual-token-ratio", "0"], r"the kept fraction must be in \(0, 1\]"),
    (["--visual-token-ratio", "1.5"], r"the kept fraction must be in \(0, 1\]"),
    (["--visual-token-ratio", "nan"], r"the kept fraction must be in \(0, 1\]"),
    (["--visual-token-ratio", "a"], r"expected a kept fraction in \(0, 1\]"),
    (["--visual-token-ratio", "0.5,0.25"], "one kept fraction per run"),
])
def test_bad_ratio_flags_fail_in_one_line(flags, message, qfile, capsys):
    from llava.eval.model_vqa_loader import main

    with pytest.raises(SystemExit):
        main(["--question-file", str(qfile), *flags])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--visual-token-ratio" in err
    import re

    assert re.search(message, err)


def test_k_and_ratio_together_are_refused(qfile):
    from llava.eval.model_vqa_loader import main

    with pytest.raises(ValueError, match=r"give --visual-token-num \(64\) or --visual-token-ratio \(0.5\), not both"):
        main(["--question-file", str(qfile), "--visual-token-num", "64", "--visual-token-ratio", "0.5"])


# ---- the LLaVA families record the same per-image fields ------------------------------------------
def test_llava_15_and_next_answers_record_n_i_and_the_kept_fraction(tiny_path, next_path, qfile, tmp_path):
    """LLaVA-1.5: N_i = 576 and K_i = round(0.1 x 576) = 58; LLaVA-NeXT: N_i counts the image's whole block."""
    from llava.eval.model_vqa_loader import main

    flags = ["--question-file", str(qfile), "--image-folder", str(SAMPLES), "--allow-text-only",
             "--visual-token-ratio", "0.1", "--conv-mode", "vicuna_v1", *COMMON]
    main(["--model-path", tiny_path, "--answers-file", str(tmp_path / "v15.jsonl"), *flags])
    for a in _lines(tmp_path / "v15.jsonl"):
        meta = a["metadata"]
        assert meta["visual_token_ratio"] == 0.1 and meta["conv_mode"] == "vicuna_v1"
        if a["question_id"] != 3:
            assert (meta["visual_tokens"], meta["visual_tokens_unpruned"], meta["visual_token_budget"]) == (58, 576, 58)
    main(["--model-path", next_path, "--answers-file", str(tmp_path / "next.jsonl"), *flags])
    for a in _lines(tmp_path / "next.jsonl"):
        meta = a["metadata"]
        if a["question_id"] != 3:
            assert meta["visual_tokens_unpruned"] > 576 and meta["visual_tokens"] < meta["visual_tokens_unpruned"]
            assert 1 <= meta["visual_token_budget"] <= meta["visual_tokens"]  # the kept rows' newlines come on top


def test_llava_checkpoints_without_conv_mode_use_llava_v1(tiny_path):
    import argparse

    from llava.eval.runner import resolve_conv_mode

    assert resolve_conv_mode(argparse.Namespace(model_path=tiny_path, conv_mode=None)) == ("llava_v1", None)
    assert resolve_conv_mode(argparse.Namespace(model_path=tiny_path, conv_mode="vicuna_v1")) == ("vicuna_v1", None)
