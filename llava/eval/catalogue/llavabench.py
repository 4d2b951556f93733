"""LLaVA-Bench (in-the-wild): the lmms-lab rows -> questions.jsonl, images, context.jsonl, GPT-4 answers."""

from __future__ import annotations

import hashlib

from llava.eval.catalogue.files import Context, has_ext, image_bytes, plain, sniff_ext
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_jsonl


def convert(ctx: Context) -> None:
    """LLaVA-Bench (in-the-wild): questions.jsonl, images/, context.jsonl, answers_gpt4.jsonl."""
    src = ctx.open()
    src.require(["question_id", "question", "image", "category"], "LLaVA-Bench")
    store = ctx.images("images")
    by_digest: dict[str, str] = {}
    questions, context, answers = [], {}, []
    for n, row in enumerate(ctx.rows(src, "questions")):
        qid = plain(row["question_id"])
        item = f"LLaVA-Bench question {qid}"
        data = image_bytes(row["image"], item)
        image_id = str(row.get("image_id") or "")
        if image_id:
            name = image_id if has_ext(image_id) else image_id + sniff_ext(data)
        else:  # no image id: number images by first appearance, as LLaVA's 001.jpg, 002.jpg, ...
            digest = hashlib.sha1(data).hexdigest()
            name = by_digest.setdefault(digest, f"{len(by_digest) + 1:03d}{sniff_ext(data)}")
        store.save(name, data, item)
        questions.append({"question_id": qid, "image": name, "text": row["question"], "category": row["category"]})
        caption = row.get("caption") or ""
        caption = "\n".join(caption) if isinstance(caption, list) else str(caption)
        context.setdefault(name, {"id": name.rsplit(".", 1)[0], "image": name, "caption": caption})
        if row.get("gpt_answer") is not None:
            answers.append({"question_id": qid, "prompt": row["question"], "text": row["gpt_answer"],
                            "answer_id": None, "model_id": "gpt-4 (lmms-lab gpt_answer)", "metadata": {}})
    write_jsonl(ctx.out("question_file", "questions.jsonl"), questions)
    write_jsonl(ctx.out("context", "context.jsonl"), list(context.values()))
    if answers:
        write_jsonl(ctx.out("reference_answers", "answers_gpt4.jsonl"), answers)
    else:
        ctx.note("no gpt_answer column: answers_gpt4.jsonl not written (the GPT review needs it)")
    ctx.counts.update({"questions": len(questions), "images": len(context)})


RECORD = Benchmark(
    name="llavabench",
    aliases=("llava-bench-in-the-wild", "llava_bench", "llava-bench"),
    converter=convert,
    driver="llava.eval.model_vqa",
    scorer="llava.eval.summarize_gpt_review",
    columns=("LLaVA-Bench",),
    hub_id="lmms-lab/llava-bench-in-the-wild",
    split="train",
    folder="llava-bench-in-the-wild",
    baselines=published("LLaVA-Bench", 65.4, 72.5),
)
