"""SEED-Bench: the lmms-lab SEED-Bench rows -> LLaVA's question file (middle video frame), images, SEED-Bench.json."""

from __future__ import annotations

import os

from llava.eval.catalogue.files import OPTION_LETTER_EN, Context, has_ext, image_bytes, plain, sniff_ext
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_json, write_jsonl

# SEED-Bench (v1) question_type names, as in SEED-Bench.json.
SEED_QUESTION_TYPES = {
    "Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3, "Instance Location": 4,
    "Instances Counting": 5, "Spatial Relation": 6, "Instance Interaction": 7, "Visual Reasoning": 8,
    "Text Understanding": 9, "Action Recognition": 10, "Action Prediction": 11, "Procedure Understanding": 12,
}


def convert(ctx: Context) -> None:
    """SEED-Bench: llava-seed-bench.jsonl (image + middle video frame), images, SEED-Bench.json."""
    src = ctx.open()
    src.require(["question_id", "question", "choice_a", "choice_b", "choice_c", "choice_d", "answer",
                 "question_type_id", "image"], "SEED-Bench")
    type_names = {v: k for k, v in SEED_QUESTION_TYPES.items()}
    store = ctx.images("")
    questions, annotation, skipped = [], [], []
    for row in ctx.rows(src, "questions"):
        qid = str(row["question_id"])
        item = f"SEED question {qid}"
        frames = row["image"] if isinstance(row["image"], list) else [row["image"]]
        frames = [f for f in frames if f is not None]
        if not frames:
            skipped.append(qid)
            continue
        data = image_bytes(frames[len(frames) // 2], item)
        type_id = int(row["question_type_id"])
        data_type = row.get("data_type") or ("image" if len(frames) == 1 else "video")
        data_id = os.path.basename(str(row.get("data_id") or ""))
        if data_type == "image":
            name = f"SEED-Bench-image/{data_id if has_ext(data_id) else qid + sniff_ext(data)}"
        else:
            name = f"SEED-Bench-video-image/{type_id}_{qid}{sniff_ext(data)}"
        store.save(name, data, item)
        text = (f"{row['question']}\nA. {row['choice_a']}\nB. {row['choice_b']}\nC. {row['choice_c']}\n"
                f"D. {row['choice_d']}\n{OPTION_LETTER_EN}")
        questions.append({"question_id": int(qid) if qid.isdigit() else qid, "image": name, "text": text,
                          "category": type_names.get(type_id, str(type_id))})
        entry = {k: plain(v) for k, v in row.items() if k != "image"}
        entry.update({"question_type_id": type_id, "data_type": data_type})
        annotation.append(entry)
    if skipped:
        ctx.note(f"{len(skipped)} SEED question(s) without any image/frame were left out, e.g. {skipped[:3]}")
    write_jsonl(ctx.out("question_file", "llava-seed-bench.jsonl"), questions)
    write_json(ctx.out("annotation_file", "SEED-Bench.json"),
               {"question_type": SEED_QUESTION_TYPES, "questions": annotation}, indent=None)
    ctx.counts.update({"questions": len(questions),
                       "video_questions": sum(a["data_type"] != "image" for a in annotation)})


RECORD = Benchmark(
    name="seed",
    aliases=("seed_bench", "seedbench", "seed-bench", "seed-img"),
    converter=convert,
    driver="llava.eval.model_vqa_loader",
    scorer="llava.eval.eval_seed",
    columns=("SEED",),
    hub_id="lmms-lab/SEED-Bench",
    split="test",
    folder="seed_bench",
    baselines=published("SEED", 58.6, 61.6),
)
