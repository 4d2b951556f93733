"""MME: the lmms-lab MME rows -> LLaVA's question file, images by subtask and the ground-truth TSV."""

from __future__ import annotations

from llava.eval.catalogue.files import SHORT_ANSWER, Context, image_bytes, write_tsv
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import write_jsonl

MME_SUFFIX = " Please answer yes or no."


def convert(ctx: Context) -> None:
    """MME: question file (each image's two questions adjacent), images by subtask, GT TSV."""
    src = ctx.open()
    src.require(["question_id", "question", "answer", "category", "image"], "MME")
    store = ctx.images("MME_Benchmark_release_version")
    records: list[tuple[dict, list[str]]] = []
    for n, row in enumerate(ctx.rows(src, "questions")):
        category = str(row["category"])
        qid = str(row["question_id"])
        if "/" not in qid:
            qid = f"{category}/{qid}"
        item = f"MME question {n} ({qid})"
        store.save(qid, image_bytes(row["image"], item, qid), item)
        original = str(row["question"]).strip()
        base = original
        for suffix in ("  Please answer yes or no.", MME_SUFFIX):
            if base.endswith(suffix):
                base = base[: -len(suffix)].strip()
                break
        gt_question = original if original.endswith(MME_SUFFIX) else base + MME_SUFFIX
        fields = [category, qid.rsplit("/", 1)[-1], gt_question, str(row["answer"]).strip()]
        if any("\t" in f or "\n" in f for f in fields):
            raise ValueError(f"{item}: a field contains a tab or newline; the MME TSV cannot hold it")
        records.append(({"question_id": qid, "image": qid, "text": f"{base}\n{SHORT_ANSWER}", "category": category},
                        fields))
    first: dict[str, int] = {}
    for i, (q, _) in enumerate(records):
        first.setdefault(q["question_id"], i)
    order = sorted(range(len(records)), key=lambda i: (first[records[i][0]["question_id"]], i))
    sizes: dict[str, int] = {}
    for q, _ in records:
        sizes[q["question_id"]] = sizes.get(q["question_id"], 0) + 1
    odd = sorted(k for k, v in sizes.items() if v != 2)
    if odd:
        ctx.note(f"{len(odd)} MME image(s) do not have exactly 2 questions (acc+ needs pairs), e.g. {odd[:3]}")
    write_jsonl(ctx.out("question_file", "llava_mme.jsonl"), [records[i][0] for i in order])
    write_tsv(ctx.out("ground_truth", "ground_truth.tsv"), ["category", "image", "question", "answer"],
              [records[i][1] for i in order], quoting=False)
    ctx.counts["questions"] = len(records)


RECORD = Benchmark(
    name="mme",
    aliases=(),
    converter=convert,
    driver="llava.eval.model_vqa_loader",
    scorer="llava.eval.eval_mme",
    columns=("MME",),
    hub_id="lmms-lab/MME",
    split="test",
    folder="MME",
    baselines=published("MME", 1510.7, 1531.3),
)
