"""POPE: the lmms-lab POPE rows -> LLaVA's question file, COCO images and per-category label files."""

from __future__ import annotations

from llava.eval.catalogue.files import SHORT_ANSWER, Context, has_ext, image_bytes
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_jsonl

# LLaVA's POPE question ids: category offset + 1-based position within the category.
POPE_OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}


def convert(ctx: Context) -> None:
    """POPE: question file, COCO images and one label file per category, in question order."""
    src = ctx.open()
    src.require(["question", "answer", "image"], "POPE")
    store = ctx.images("val2014")
    questions: list[dict] = []
    labels: dict[str, list[dict]] = {}
    offsets = dict(POPE_OFFSETS)
    for n, row in enumerate(ctx.rows(src, "questions")):
        category = str(row.get("category") or ctx.split)  # lmms-lab "Full" config: one split per category
        item = f"POPE row {n} (question_id {row.get('question_id')})"
        label = str(row["answer"]).strip().lower()
        if label not in ("yes", "no"):
            raise ValueError(f"{item}: answer {row['answer']!r} is not yes/no")
        data = image_bytes(row["image"], item)
        source = str(row.get("image_source") or row.get("id") or f"pope_{n}")
        name = source if has_ext(source) else source + ".jpg"
        store.save(name, data, item)
        if category not in offsets:
            offsets[category] = 10_000_000 * (max(offsets.values()) // 10_000_000 + 1)
        position = len(labels.setdefault(category, [])) + 1
        labels[category].append({"question_id": position, "image": name, "text": row["question"], "label": label})
        questions.append({"question_id": offsets[category] + position, "image": name,
                          "text": f"{row['question']}\n{SHORT_ANSWER}", "category": category})
    write_jsonl(ctx.out("question_file", "llava_pope_test.jsonl"), questions)
    for category, rows in labels.items():
        write_jsonl(ctx.out(f"labels_{category}", f"labels/coco_pope_{category}.json"), rows)
    ctx.files["annotation_dir"] = str(ctx.out_dir / "labels")
    ctx.counts.update({"questions": len(questions), **{f"questions_{c}": len(r) for c, r in labels.items()}})
    if len(labels.get("random", [])) == 3000:
        ctx.note("POPE random has 3,000 questions here; LLaVA-1.5's file has 2,910 (POPE commit e3e39262)")


RECORD = Benchmark(
    name="pope",
    aliases=(),
    converter=convert,
    driver="llava.eval.model_vqa_loader",
    scorer="llava.eval.eval_pope",
    columns=("POPE",),
    hub_id="lmms-lab/POPE",
    split="test",
    folder="pope",
    baselines=published("POPE", 85.9, 85.9),
)
