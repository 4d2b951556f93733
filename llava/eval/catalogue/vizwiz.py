"""VizWiz-VQA: the lmms-lab VizWiz-VQA rows -> LLaVA's question file, images, and val.json when present."""

from __future__ import annotations

from llava.eval.catalogue.files import SHORT_ANSWER, Context, has_ext, image_bytes, plain
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_json, write_jsonl

VIZWIZ_UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."


def convert(ctx: Context) -> None:
    """VizWiz-VQA: question file (ids 0..N-1) + images; val.json when the split has answers."""
    src = ctx.open()
    src.require(["question_id", "question", "image"], "VizWiz-VQA")
    store = ctx.images(ctx.split)
    questions, annotations = [], []
    for n, row in enumerate(ctx.rows(src, "questions")):
        stem = str(row["question_id"])
        item = f"VizWiz question {n} ({stem})"
        name = store.save(stem if has_ext(stem) else stem + ".jpg", image_bytes(row["image"], item), item)
        text = f"{str(row['question']).capitalize()}\n{VIZWIZ_UNANSWERABLE}\n{SHORT_ANSWER}"
        questions.append({"question_id": n, "image": name, "text": text, "category": "default"})
        answers = [a for a in (row.get("answers") or []) if a]
        if answers:
            annotations.append({"image": name, "question": row["question"],
                                "answers": [{"answer": a} if isinstance(a, str) else plain(a) for a in answers],
                                "answer_type": row.get("category")})
    write_jsonl(ctx.out("question_file", f"llava_{ctx.split}.jsonl"), questions)
    if annotations:
        write_json(ctx.out("annotation_file", f"{ctx.split}.json"), annotations, indent=None)
        if len(annotations) != len(questions):
            ctx.note(f"{len(questions) - len(annotations)} question(s) have no answers and no annotation")
    else:
        ctx.note(f"split {ctx.split} has no answers: score it on the EvalAI server")
    ctx.counts["questions"] = len(questions)


RECORD = Benchmark(
    name="vizwiz",
    aliases=("vizwiz_vqa", "vizwiz-vqa"),
    converter=convert,
    driver="llava.eval.model_vqa_loader",
    scorer="llava.eval.eval_vqa",
    columns=("VizWiz",),
    hub_id="lmms-lab/VizWiz-VQA",
    split="test",
    folder="vizwiz",
    baselines=published("VizWiz", 50.0, 53.6),
)
