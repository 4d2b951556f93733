"""TextVQA: the lmms-lab textvqa rows -> LLaVA's OCR-token question file, images and the val annotation."""

from __future__ import annotations

from llava.eval.catalogue.files import SHORT_ANSWER, Context, image_bytes, plain
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_json, write_jsonl

OCR_PREFIX = "Reference OCR token: "


def convert(ctx: Context) -> None:
    """TextVQA val: question file with OCR tokens, images, and the TextVQA_0.5.1_val.json annotation."""
    src = ctx.open()
    src.require(["image_id", "question", "image"], "TextVQA")
    has_ocr = "ocr_tokens" in src.columns
    if not has_ocr:
        ctx.note("no ocr_tokens column: prompts have no 'Reference OCR token' line (LLaVA's file has one)")
    else:
        ctx.note("OCR tokens come from the dataset's ocr_tokens column "
                 "(that they equal LLaVA's Rosetta tokens is not verified)")
    store = ctx.images("train_images")
    questions, annotations = [], []
    for n, row in enumerate(ctx.rows(src, "questions")):
        image_id = str(row["image_id"])
        item = f"TextVQA question {n} (image {image_id})"
        name = store.save(f"{image_id}.jpg", image_bytes(row["image"], item), item)
        text = str(row["question"]).capitalize()
        if has_ocr:
            text += "\n" + OCR_PREFIX + ", ".join(row["ocr_tokens"] or [])
        questions.append({"question_id": image_id, "image": name, "text": f"{text}\n{SHORT_ANSWER}",
                          "category": "default"})
        annotations.append({k: plain(v) for k, v in row.items() if k not in ("image", "ocr_tokens")})
    name = "llava_textvqa_val_v051_ocr.jsonl" if has_ocr else "llava_textvqa_val_v051_noocr.jsonl"
    write_jsonl(ctx.out("question_file", name), questions)
    if any(a.get("answers") for a in annotations):
        header = {"dataset_type": {"validation": "val"}.get(ctx.split, ctx.split), "dataset_name": "textvqa",
                  "dataset_version": "0.5.1"}
        write_json(ctx.out("annotation_file", "TextVQA_0.5.1_val.json"), {**header, "data": annotations}, indent=None)
    else:
        ctx.note(f"split {ctx.split} has no answers: no annotation file written")
    ctx.counts["questions"] = len(questions)


RECORD = Benchmark(
    name="textvqa",
    aliases=(),
    converter=convert,
    driver="llava.eval.model_vqa_loader",
    scorer="llava.eval.eval_textvqa",
    columns=("TextVQA",),
    hub_id="lmms-lab/textvqa",
    split="validation",
    folder="textvqa",
    baselines=published("TextVQA", 58.2, 61.3),
)
