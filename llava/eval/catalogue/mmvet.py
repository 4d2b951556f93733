"""MM-Vet: the lmms-lab MMVet rows -> LLaVA's question file, images and the grader's mm-vet.json."""

from __future__ import annotations

import os
import re

from llava.eval.catalogue.files import Context, has_ext, image_bytes, sniff_ext
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_json, write_jsonl


def convert(ctx: Context) -> None:
    """MM-Vet: llava-mm-vet.jsonl, images/, and the grader's mm-vet.json."""
    src = ctx.open()
    src.require(["question_id", "question", "answer", "image"], "MM-Vet")
    store = ctx.images("images")
    questions, gt = [], {}
    for n, row in enumerate(ctx.rows(src, "questions")):
        key = str(row["question_id"])
        match = re.fullmatch(r"v1_(\d+)", key)
        qid = int(match.group(1)) if match else n
        key = key if match else f"v1_{qid}"
        item = f"MM-Vet {key}"
        data = image_bytes(row["image"], item)
        source = os.path.basename(str(row.get("image_source") or ""))
        name = store.save(source if has_ext(source) else key + sniff_ext(data), data, item)
        questions.append({"image": name, "text": row["question"], "category": "conv", "question_id": qid})
        caps = row.get("capability") or []
        caps = [c.strip() for c in caps.split(",")] if isinstance(caps, str) else list(caps)
        gt[key] = {"imagename": name, "capability": caps, "question": row["question"], "answer": row["answer"]}
    write_jsonl(ctx.out("question_file", "llava-mm-vet.jsonl"), questions)
    write_json(ctx.out("mmvet_json", "mm-vet.json"), gt, indent=2)
    ctx.counts["questions"] = len(questions)


RECORD = Benchmark(
    name="mmvet",
    aliases=("mm-vet",),
    converter=convert,
    driver="llava.eval.model_vqa",
    scorer="llava.eval.eval_mmvet_summary",
    columns=("MM-Vet",),
    hub_id="lmms-lab/MMVet",
    split="test",
    folder="mm-vet",
    baselines=published("MM-Vet", 31.1, 36.1),
)
