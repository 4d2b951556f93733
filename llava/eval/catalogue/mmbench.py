"""MMBench (English and Chinese): the lmms-lab MMBench rows -> the TSV the scorer reads and a question jsonl."""

from __future__ import annotations

import base64

from llava.eval.catalogue.files import OPTION_LETTER_EN, Context, image_bytes, is_none, sniff_ext, write_tsv
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_jsonl

OPTION_LETTER_CN = "请直接回答选项字母。"


MMBENCH_COLUMNS = ("index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
                   "l2-category", "comment", "split")


def _convert_mmbench(ctx: Context, lang: str) -> None:
    """MMBench: the TSV (base64 images, circular copies as in the data) + a question jsonl with images."""
    src = ctx.open()
    src.require(["index", "question", "A", "B", "image"], f"MMBench ({lang})")
    stem = f"mmbench_{ctx.split}_20230712" if lang == "en" else f"mmbench_{ctx.split}_cn_20231003"
    header = [c for c in MMBENCH_COLUMNS if c in src.columns or (c == "l2-category" and "L2-category" in src.columns)]
    suffix = OPTION_LETTER_EN if lang == "en" else OPTION_LETTER_CN
    store = ctx.images("images")
    rows, questions = [], []
    for row in ctx.rows(src, "questions"):
        index = int(row["index"])
        item = f"MMBench index {index}"
        data = image_bytes(row["image"], item)
        values = {**row, "l2-category": row.get("l2-category", row.get("L2-category")),
                  "image": base64.b64encode(data).decode("ascii")}
        rows.append([values.get(c) for c in header])
        options = []
        for letter in "ABCD":
            if is_none(row.get(letter)):
                break
            options.append(f"{letter}. {row[letter]}")
        text = ("" if is_none(row.get("hint")) else f"{row['hint']}\n") + str(row["question"])
        text += "".join("\n" + o for o in options) + "\n" + suffix
        name = store.save(f"{index % 1_000_000}{sniff_ext(data)}", data, item)
        questions.append({"question_id": index, "image": name, "text": text, "category": row.get("category")})
    write_tsv(ctx.out("annotation_file", f"{stem}.tsv"), header, rows)
    write_jsonl(ctx.out("question_file", f"llava_{stem}.jsonl"), questions)
    if "answer" not in header or not any(r[header.index("answer")] for r in rows):
        ctx.note(f"split {ctx.split}: no gold answers in the data (submit to the MMBench server)")
    ctx.counts.update({"rows": len(rows), "questions": len({q['question_id'] % 1_000_000 for q in questions})})


def convert_en(ctx: Context) -> None:
    """MMBench English (see `_convert_mmbench`)."""
    _convert_mmbench(ctx, "en")


def convert_cn(ctx: Context) -> None:
    """MMBench Chinese (see `_convert_mmbench`)."""
    _convert_mmbench(ctx, "cn")


RECORD = Benchmark(
    name="mmbench",
    aliases=("mmbench_en", "mmbench-en"),
    converter=convert_en,
    driver="llava.eval.model_vqa_mmbench",
    scorer="llava.eval.eval_mmbench",
    columns=("MMB",),
    hub_id="lmms-lab/MMBench",
    split="dev",
    folder="mmbench",
    config="en",
    baselines=published("MMB", 64.3, 67.7),
)


RECORD_CN = Benchmark(
    name="mmbench_cn",
    aliases=("mmbench-cn",),
    converter=convert_cn,
    driver="llava.eval.model_vqa_mmbench",
    scorer="llava.eval.eval_mmbench",
    columns=("MMB-CN",),
    hub_id="lmms-lab/MMBench",
    split="dev",
    folder="mmbench_cn",
    config="cn",
    baselines=published("MMB-CN", 58.3, 63.6),
)
