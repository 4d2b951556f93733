"""VQAv2: the lmms-lab VQAv2 rows -> LLaVA's question file, COCO images, and val annotations when present."""

from __future__ import annotations

from llava.eval.catalogue.files import SHORT_ANSWER, Context, image_bytes, plain
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_json, write_jsonl


def convert(ctx: Context) -> None:
    """VQAv2: question file + COCO images; the val annotation file when the split has answers."""
    src = ctx.open()
    src.require(["question_id", "question", "image_id", "image"], "VQAv2")
    coco = "val2014" if ctx.split in ("validation", "val") else "test2015"
    stem = {"testdev": "test-dev2015", "test": "test2015"}.get(ctx.split, coco)
    store = ctx.images(coco)
    questions, annotations = [], []
    for row in ctx.rows(src, "questions"):
        qid, image_id = int(row["question_id"]), int(row["image_id"])
        item = f"VQAv2 question {qid}"
        name = store.save(f"COCO_{coco}_{image_id:012d}.jpg", image_bytes(row["image"], item), item)
        questions.append({"question_id": qid, "image": name, "text": f"{row['question']}\n{SHORT_ANSWER}",
                          "category": "default"})
        if row.get("answers"):
            annotations.append({k: plain(row[k]) for k in ("question_id", "image_id", "question_type", "answer_type",
                                                             "multiple_choice_answer", "answers") if k in row})
    write_jsonl(ctx.out("question_file", f"llava_vqav2_mscoco_{stem}.jsonl"), questions)
    if annotations:
        write_json(ctx.out("annotation_file", f"v2_mscoco_{coco}_annotations.json"), {"annotations": annotations},
                   indent=None)
    else:
        ctx.note(f"split {ctx.split} has no answers: score it on the EvalAI server")
    ctx.counts["questions"] = len(questions)


RECORD = Benchmark(
    name="vqav2",
    aliases=("vqa_v2", "vqa-v2"),
    converter=convert,
    driver="llava.eval.model_vqa_loader",
    scorer="llava.eval.eval_vqa",
    columns=("VQAv2",),
    hub_id="lmms-lab/VQAv2",
    split="testdev",
    folder="vqav2",
    baselines=published("VQAv2", 78.5, 80.0),
)
