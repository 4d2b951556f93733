"""GQA: the lmms-lab GQA instructions and images configs -> LLaVA's question file, images and questions json."""

from __future__ import annotations

from llava.eval.catalogue.files import SHORT_ANSWER, Context, image_bytes, plain
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_json, write_jsonl


def convert(ctx: Context) -> None:
    """GQA balanced: question file, the images it needs (images config), and the questions json."""
    qsrc = ctx.open(config=ctx.config or f"{ctx.split}_balanced_instructions")
    qsrc.require(["id", "imageId", "question"], "GQA (instructions config)")
    questions, gt, needed = [], {}, {}
    for row in ctx.rows(qsrc, "questions"):
        qid, image_id = str(row["id"]), str(row["imageId"])
        needed.setdefault(image_id, qid)
        questions.append({"question_id": qid, "image": f"{image_id}.jpg", "text": f"{row['question']}\n{SHORT_ANSWER}",
                          "category": "default"})
        gt[qid] = {k: plain(v) for k, v in row.items() if k not in ("id", "image")}
    isrc = ctx.open(config=ctx.images_config or f"{ctx.split}_balanced_images", dataset=ctx.images_dataset)
    isrc.require(["id", "image"], "GQA (images config)")
    store = ctx.images("data/images")
    found = set()
    for row in ctx.rows(isrc, "images", limit=False):
        image_id = str(row["id"])
        if image_id in needed and image_id not in found:
            store.save(f"{image_id}.jpg", image_bytes(row["image"], f"GQA image {image_id}"), f"GQA image {image_id}")
            found.add(image_id)
    missing = [i for i in needed if i not in found]
    if missing:
        raise ValueError(f"GQA: {len(missing)} image(s) not in {isrc.label}, e.g. image {missing[0]} "
                         f"(question {needed[missing[0]]}); check --images-config / --images-dataset")
    stem = f"llava_gqa_{ctx.split}_balanced"
    write_jsonl(ctx.out("question_file", f"{stem}.jsonl"), questions)
    write_json(ctx.out("questions_json", f"data/{ctx.split}_balanced_questions.json"), gt, indent=None)
    ctx.counts.update({"questions": len(questions), "images": len(found)})


RECORD = Benchmark(
    name="gqa",
    aliases=(),
    converter=convert,
    driver="llava.eval.model_vqa_loader",
    scorer="llava.eval.eval_gqa",
    columns=("GQA",),
    hub_id="lmms-lab/GQA",
    split="testdev",
    folder="gqa",
    baselines=published("GQA", 62.0, 63.3),
)
