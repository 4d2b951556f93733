"""ScienceQA-IMG: the lmms-lab ScienceQA rows -> LLaVA's CQM-A question json, images, problems and pid splits."""

from __future__ import annotations

from typing import Any

from llava.eval.catalogue.files import LETTERS, Context, image_bytes, plain
from llava.eval.catalogue.record import Benchmark, published
from llava.eval.io_utils import read_json, write_json


def _sqa_prompt(row: dict, item: str) -> tuple[str, str]:
    """LLaVA's CQM-A human turn and the gold letter for a ScienceQA row."""
    choices = list(row["choices"])
    if not 2 <= len(choices) <= len(LETTERS):
        raise ValueError(f"{item}: {len(choices)} choices")
    answer = int(row["answer"])
    if not 0 <= answer < len(choices):
        raise ValueError(f"{item}: answer index {answer} out of range for {len(choices)} choices")
    hint = (row.get("hint") or "").strip()
    text = (f"Context: {hint}\n" if hint else "") + f"{row['question']}\n"
    text += "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    return text, LETTERS[answer]


def convert(ctx: Context) -> None:
    """ScienceQA(-IMG): llava_<split>_CQM-A.json, images/<split>/<pid>/image.png, problems.json, pid_splits.json."""
    src = ctx.open()
    src.require(["question", "choices", "answer"], "ScienceQA")
    split_key = {"validation": "val"}.get(ctx.split, ctx.split)
    reference: dict[str, list[tuple[str, str]]] = {}
    if ctx.reference_questions:
        for entry in read_json(ctx.reference_questions):
            human = entry["conversations"][0]["value"]
            reference.setdefault(human, []).append((str(entry["id"]), entry["conversations"][1]["value"].strip()))
    else:
        ctx.note("ScienceQA rows have no problem id: pids are row numbers (pass --reference-questions to use LLaVA's)")
    store = ctx.images(f"images/{split_key}")
    items, problems, pids = [], {}, []
    for n, row in enumerate(ctx.rows(src, "questions")):
        item = f"ScienceQA row {n}"
        human, letter = _sqa_prompt(row, item)
        has_image = row.get("image") is not None
        if has_image:
            human = "<image>\n" + human
        pid = str(n)
        if reference:
            matches = reference.get(human)
            if not matches:
                raise ValueError(f"{item}: prompt not found (or used up) in {ctx.reference_questions}: {human[:80]!r}")
            same = [i for i, (_, ref_letter) in enumerate(matches) if ref_letter == letter]
            if not same:
                raise ValueError(f"{item}: gold letter {letter}, but the reference problem(s) "
                                 f"{[m[0] for m in matches]} with this prompt have {[m[1] for m in matches]}")
            pid = matches.pop(same[0])[0]  # identical prompts (different images): first one with the same answer
        entry: dict[str, Any] = {"id": pid}
        if has_image:
            entry["image"] = store.save(f"{pid}/image.png", image_bytes(row["image"], f"{item} (pid {pid})"), item)
        entry["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": letter}]
        items.append(entry)
        pids.append(pid)
        problem = {k: plain(row[k]) for k in ("question", "choices", "answer", "hint", "task", "grade", "subject",
                                               "topic", "category", "skill", "lecture", "solution") if k in row}
        problem["image"] = "image.png" if has_image else None
        problem["split"] = split_key
        problems[pid] = problem
    if len(set(pids)) != len(pids):
        raise ValueError("ScienceQA: duplicate problem ids; check --reference-questions")
    write_json(ctx.out("question_file", f"llava_{split_key}_CQM-A.json"), items, indent=2)
    write_json(ctx.out("problems", "problems.json"), problems, indent=None)
    write_json(ctx.out("pid_splits", "pid_splits.json"), {split_key: pids}, indent=None)
    ctx.counts.update({"problems": len(items), "with_image": sum("image" in e for e in items)})


RECORD = Benchmark(
    name="scienceqa",
    aliases=("sqa", "scienceqa_img", "sqa-img"),
    converter=convert,
    driver="llava.eval.model_vqa_science",
    scorer="llava.eval.eval_science_qa",
    columns=("SQA-IMG",),
    hub_id="lmms-lab/ScienceQA",
    split="test",
    folder="scienceqa",
    config="ScienceQA-IMG",
    baselines=published("SQA-IMG", 66.8, 71.6),
)
