"""The driver check of issue 15 on a processor-family checkpoint folder, shared by the driver tests.

`check_unpruned(folder, hf_class, ...)`: `model_vqa_loader` with `--model-path` and no budget answers
every question (images of different sizes and aspect ratios, batched, a text-only one among them)
exactly as transformers' own class answers it greedily, one question at a time, on the same
chat-template prompt. `check_budget(...)`: with `--visual-token-num K` (or `--visual-token-ratio r`)
every record reports at most K (round(r N_i)) visual tokens per image and its N_i.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

MAX_NEW = 6
COMMON = ["--temperature", "0", "--max_new_tokens", str(MAX_NEW), "--device", "cpu"]
# (name, width, height): wide, tall, small (fewer than 64 tokens on the Qwen checkpoints), very wide
IMAGES = [("wide.png", 448, 300), ("tall.png", 260, 500), ("small.png", 120, 90), ("strip.png", 640, 210)]
QUESTIONS = [
    {"question_id": 1, "image": "wide.png", "text": "what is here ?\nAnswer the question using a single word or phrase."},
    {"question_id": 2, "image": "tall.png", "text": "describe this image"},
    {"question_id": 3, "text": "which is a fruit ?"},  # text-only
    {"question_id": 4, "image": "small.png", "text": "the red circle ?"},
    {"question_id": 5, "image": "strip.png", "text": "what is here ?"},
    {"question_id": 6, "image": "wide.png", "text": "describe the stripes"},
]


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """Images (patterned, seeded) and the question file under `folder`; returns (image folder, question file)."""
    folder = Path(folder)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, w, h in IMAGES:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // w), (y * 255 // h), ((x // 16 + y // 16) % 2) * 200], -1)
        noise = rng.integers(0, 56, size=(h, w, 3))
        Image.fromarray((base + noise).clip(0, 255).astype(np.uint8)).save(images / name)
    qfile = folder / "questions.jsonl"
    qfile.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return images, qfile


def read_answers(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def run_loader(model_path, qfile, image_folder, answers, *flags) -> list[dict] | None:
    """model_vqa_loader on the folder; the records (None for a sweep's '{k}' path: one file per K)."""
    from llava.eval.model_vqa_loader import main

    main(["--model-path", str(model_path), "--question-file", str(qfile), "--image-folder", str(image_folder),
          "--answers-file", str(answers), "--allow-text-only", *COMMON, *flags])
    return None if "{k}" in str(answers) else read_answers(answers)


def chat_prompt(tokenizer, template: str, question: str, with_image: bool) -> str:
    """One user turn, the image first, rendered by transformers with the checkpoint's template."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": question}]
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], chat_template=template,
                                         tokenize=False, add_generation_prompt=True)


def folder_template(folder: Path, tokenizer) -> str:
    """The checkpoint's chat template as transformers stores it: chat_template.jinja, chat_template.json,
    or inside the tokenizer's config."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text())["chat_template"]
    assert tokenizer.chat_template, f"{folder} has no chat template"
    return tokenizer.chat_template


def reference_answers(folder, hf_class, make_inputs, image_folder, logits: dict | None = None) -> dict[int, list[int]]:
    """transformers' greedy new tokens per question (its eos included), one question at a time.

    make_inputs(folder, prompt, images) -> the model's keyword inputs for one prompt. `logits`, if
    given, receives each question's raw step logits [T, V].
    """
    from transformers import AutoTokenizer

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(str(folder))
    template = folder_template(folder, tok)
    model = hf_class.from_pretrained(str(folder)).eval()
    out = {}
    for q in QUESTIONS:
        images = [Image.open(Path(image_folder) / q["image"]).convert("RGB")] if "image" in q else []
        inputs = make_inputs(folder, chat_prompt(tok, template, q["text"], bool(images)), images)
        with torch.no_grad():
            gen = model.generate(**inputs, max_new_tokens=MAX_NEW, do_sample=False, output_logits=True,
                                 return_dict_in_generate=True)
        out[q["question_id"]] = gen.sequences[0, inputs["input_ids"].shape[1]:].tolist()
        if logits is not None:
            logits[q["question_id"]] = torch.stack(gen.logits, 1)[0]  # T x [1, V] -> [T, V]
    return out


def check_unpruned(folder, hf_class, make_inputs, workdir: Path, batch_size: int = 3,
                   want: dict[int, list[int]] | None = None) -> list[dict]:
    """Driver answers without a budget == transformers' answers (`want`: computed already); returns the records."""
    from transformers import AutoTokenizer

    images, qfile = write_inputs(workdir)
    if want is None:
        want = reference_answers(folder, hf_class, make_inputs, images)
    answers = run_loader(folder, qfile, images, workdir / "unpruned.jsonl", "--batch-size", str(batch_size))
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert sorted(a["question_id"] for a in answers) == [q["question_id"] for q in QUESTIONS]
    for a in answers:
        meta = a["metadata"]
        assert a["text"] == tok.decode(want[a["question_id"]], skip_special_tokens=True).strip(), a["question_id"]
        assert meta["visual_token_num"] is None and meta["conv_mode"] is None
        if a["question_id"] == 3:
            assert meta["visual_tokens"] == meta["visual_tokens_unpruned"] == []
        else:
            assert meta["visual_tokens"] == meta["visual_tokens_unpruned"] > 0
    return answers


def check_budget(folder, workdir: Path, k: int = 64, ratio: float | None = None) -> list[dict]:
    """With K (or the kept fraction `ratio`) every image keeps at most its budget; N_i recorded."""
    images, qfile = write_inputs(workdir)
    flags = ["--visual-token-ratio", str(ratio)] if ratio is not None else ["--visual-token-num", str(k)]
    answers = run_loader(folder, qfile, images, workdir / f"budget_{k}_{ratio}.jsonl", "--batch-size", "4", *flags)
    assert len(answers) == len(QUESTIONS)
    for a in answers:
        meta = a["metadata"]
        assert meta["visual_token_num"] == (None if ratio is not None else k)
        if a["question_id"] == 3:
            assert meta["visual_tokens"] == []
            continue
        n = meta["visual_tokens_unpruned"]
        budget = round(ratio * n) if ratio is not None else k
        assert isinstance(n, int) and n > 0 and meta["visual_token_budget"] == budget
        assert meta["visual_tokens"] <= budget and meta["visual_tokens"] <= n
        assert meta["visual_tokens"] >= min(n, budget) - 1  # fastervlm keeps K (or K-1), all when N_i <= K
    return answers
