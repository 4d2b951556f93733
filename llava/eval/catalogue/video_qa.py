"""The four video-QA benchmarks of Video-LLaVA and FasterVLM: MSVD-QA, MSRVTT-QA, TGIF-QA, ActivityNet-QA.

Data: Video-LLaVA's `eval/GPT_Zero_Shot_QA/<Bench>_Zero_Shot_QA` folders (TRAIN_AND_VALIDATE.md of
PKU-YuanGroup/Video-LLaVA). Each holds `test_q.json` (a list of {video_name, question, question_id}),
`test_a.json` (the answers {answer, type, question_id}, aligned with the questions by position) and a
video folder. FasterVLM (Theia-4869/FasterVLM, branch `video`) ships the first 1000 of each as
`test_q_1k.json` / `test_a_1k.json` and evaluates those. A question's video is
`<video folder>/<prefix><video_name><ext>`, the extension being the first of .mp4 .avi .mov .mkv that
exists (`run_inference_video_qa.py`). The prefix is "v_" for ActivityNet (`run_inference_video_qa_act.py`)
and empty elsewhere. The video folders are MSVD `videos`, MSRVTT `videos/all`, TGIF `mp4` and
ActivityNet `all_test` (`scripts/v1_5/eval/run_qa_*.sh`).

`convert(ctx)` (`python -m llava.eval.prepare_hf --benchmark msvd --dataset <local copy>`) checks a
local copy and writes the question file `model_video_qa` reads. The video names in it carry the
prefix and extension, so the driver finds each file as is. It also writes the aligned answers. Videos
are never copied: when --out-dir is not the copy itself, the video folder is linked (a symlink).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from llava.eval.catalogue.files import Context
from llava.eval.catalogue.record import Benchmark
from llava.eval.io_utils import write_json

QUESTIONS_OUT = "llava_test_q.json"
ANSWERS_OUT = "llava_test_a.json"
SOURCE_QUESTIONS = ("test_q.json", "test_q_1k.json")  # Video-LLaVA's full file, FasterVLM's first 1K
OFFICIAL_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv")  # the order run_inference_video_qa.py tries
EXTRA_EXTENSIONS = (".webm", ".gif")  # also read by model_video_qa; noted when used


@dataclass(frozen=True)
class VideoBenchmark(Benchmark):
    """A video-QA benchmark: the Benchmark fields, plus where its videos are and how they are named.

    video_folder: the video folder inside `folder` (Video-LLaVA's layout).
    video_prefix: prepended to `video_name` to name the file ("v_" for ActivityNet).
    published: the paper's (accuracy, score) per model, e.g. {"Video-LLaVA-7B": (70.7, 3.9)}.
    """

    video_folder: str = "videos"
    video_prefix: str = ""
    published: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "published", MappingProxyType(dict(self.published)))


def _read_list(path: Path, what: str) -> list:
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); expected Video-LLaVA's {what}") \
            from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected Video-LLaVA's {what} (a non-empty JSON list)")
    return rows


def find_video(folder: Path, name: str) -> tuple[str | None, bool]:
    """(the file name of `name` inside `folder`, whether its extension is one the original tries)."""
    for ext in OFFICIAL_EXTENSIONS + EXTRA_EXTENSIONS:
        if (folder / (name + ext)).is_file():
            return name + ext, ext in OFFICIAL_EXTENSIONS
    return None, False


def convert(ctx: Context) -> None:
    """A local copy of Video-LLaVA's <Bench>_Zero_Shot_QA folder -> llava_test_q.json, llava_test_a.json
    and the video folder (a link when --out-dir is elsewhere)."""
    from llava.eval import catalogue

    bench = catalogue.get(ctx.benchmark)
    if not ctx.dataset:
        raise ValueError(f"{bench.name}: pass --dataset, the local copy of Video-LLaVA's {bench.folder} folder "
                         f"(holding test_q.json, test_a.json and {bench.video_folder}/)")
    src = Path(ctx.dataset)
    if not src.is_dir():
        raise FileNotFoundError(f"{bench.name}: --dataset {src} is not a folder; give the local copy of "
                                f"Video-LLaVA's {bench.folder} (nothing is downloaded)")
    qfile = next((src / n for n in SOURCE_QUESTIONS if (src / n).is_file()), None)
    if qfile is None:
        raise FileNotFoundError(f"{bench.name}: no {' or '.join(SOURCE_QUESTIONS)} in {src}")
    afile = qfile.with_name(qfile.name.replace("_q", "_a", 1))
    if not afile.is_file():
        raise FileNotFoundError(f"{bench.name}: {afile.name} (the answers of {qfile.name}) not found in {src}")
    videos = src / bench.video_folder
    if not videos.is_dir():
        raise FileNotFoundError(f"{bench.name}: video folder {videos} not found (Video-LLaVA's layout puts "
                                f"the videos in {bench.video_folder}/)")
    questions, answers = _read_list(qfile, "question file"), _read_list(afile, "answer file")
    if len(questions) != len(answers):
        raise ValueError(f"{afile} holds {len(answers)} answers for the {len(questions)} questions of {qfile}; "
                         "they must be aligned one to one")
    rows = list(zip(questions, answers))[:ctx.limit] if ctx.limit else list(zip(questions, answers))
    out_q, out_a, missing, extra_ext = [], [], [], 0
    for i, (q, a) in enumerate(rows):
        where = f"{qfile.name}[{i}]"
        if not isinstance(q, dict) or any(k not in q for k in ("video_name", "question", "question_id")):
            raise ValueError(f"{where}: expected {{video_name, question, question_id}}")
        if not isinstance(a, dict) or "answer" not in a:
            raise ValueError(f"{afile.name}[{i}]: expected an object with an 'answer'")
        if "question_id" in a and str(a["question_id"]) != str(q["question_id"]):
            raise ValueError(f"{afile.name}[{i}] answers question {a['question_id']}, but question {i} is "
                             f"{q['question_id']}; the files are not aligned")
        name, official = find_video(videos, bench.video_prefix + str(q["video_name"]))
        if name is None:
            missing.append(f"question {q['question_id']}: {bench.video_prefix}{q['video_name']}")
            continue
        extra_ext += not official
        out_q.append({"video_name": name, "question": q["question"], "question_id": q["question_id"]})
        out_a.append({**a, "question_id": q["question_id"]})
    if missing and not ctx.skip_missing:
        raise FileNotFoundError(f"{bench.name}: {len(missing)} of {len(rows)} questions name a video that is not in "
                                f"{videos} (e.g. {missing[0]}, tried {', '.join(OFFICIAL_EXTENSIONS)}); complete "
                                "the copy, or pass --skip-missing-videos to leave those questions out")
    if missing:
        ctx.note(f"left out {len(missing)} question(s) whose video is missing (e.g. {missing[0]}); the first-N "
                 "questions are then not the official first N")
    if extra_ext:
        ctx.note(f"{extra_ext} video(s) have an extension (.webm/.gif) the original script does not try; "
                 "the original would skip those questions")
    dest = ctx.out_dir / bench.video_folder
    if (dest.exists() or dest.is_symlink()) and dest.resolve() != videos.resolve():
        raise ValueError(f"{bench.name}: {dest} already exists and is not {videos}, so the questions would name "
                         "videos of another folder; remove it or choose another --out-dir")
    write_json(ctx.out("question_file", QUESTIONS_OUT), out_q, indent=2)
    write_json(ctx.out("answers_file", ANSWERS_OUT), out_a, indent=2)
    ctx.files["video_folder"] = str(_link_videos(videos, ctx.out_dir / bench.video_folder, ctx))
    ctx.counts.update(questions=len(out_q), videos=len({q["video_name"] for q in out_q}), source_questions=len(rows))


def _link_videos(videos: Path, dest: Path, ctx: Context) -> Path:
    """`dest` as the video folder: the folder itself when the copy is --out-dir, else a symlink to it."""
    if dest.exists() or dest.is_symlink():
        if dest.resolve() != videos.resolve():
            ctx.note(f"{dest} already exists and is not {videos}; left as it is")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(videos.resolve(), dest, target_is_directory=True)
    return dest


def _record(name: str, aliases: tuple[str, ...], column: str, folder: str, video_folder: str,
            published: tuple[float, float], prefix: str = "") -> VideoBenchmark:
    return VideoBenchmark(
        name=name, aliases=aliases, converter=convert, driver="llava.eval.model_video_qa",
        scorer="llava.eval.eval_video_qa", columns=(column,), hub_id="", split="test",
        folder=f"GPT_Zero_Shot_QA/{folder}", video_folder=video_folder, video_prefix=prefix,
        published={"Video-LLaVA-7B": published},
    )


# Published accuracy / score of Video-LLaVA-7B (README "Main Results", assets/res_vi.jpg of
# PKU-YuanGroup/Video-LLaVA at 984e65b; arXiv 2311.10122): full test sets.
MSVD = _record("msvd", ("msvd-qa", "msvd_qa"), "MSVD-QA", "MSVD_Zero_Shot_QA", "videos", (70.7, 3.9))
MSRVTT = _record("msrvtt", ("msrvtt-qa", "msrvtt_qa"), "MSRVTT-QA", "MSRVTT_Zero_Shot_QA", "videos/all", (59.2, 3.5))
TGIF = _record("tgif", ("tgif-qa", "tgif_qa"), "TGIF-QA", "TGIF_Zero_Shot_QA", "mp4", (70.0, 4.0))
ACTIVITYNET = _record("activitynet", ("activitynet-qa", "activitynet_qa", "anet"), "ActivityNet-QA",
                      "Activitynet_Zero_Shot_QA", "all_test", (45.3, 3.3), prefix="v_")
RECORDS = (TGIF, MSVD, MSRVTT, ACTIVITYNET)  # FasterVLM's column order

# FasterVLM's video table: Video-LLaVA-7B, 8 frames, first 1K questions of each benchmark, judged by
# GPT-3.5 (README of Theia-4869/FasterVLM, branch `video`, commit eca4cd5 "FasterVLM with Video-LLaVA",
# 2024-12-15). Rows: (method, video tokens = 8 x K per frame, {column: (accuracy, score)}). The
# unpruned row has 2048 tokens: FasterVLM's video code drops each frame's [CLS] token at every budget.
FASTERVLM_SOURCE = "Theia-4869/FasterVLM@eca4cd56aa3071057565745a1256f1287f54d313:README.md (branch video)"
FASTERVLM_VIDEO_TABLE: tuple[tuple[str, int, Mapping[str, tuple[float, float]]], ...] = tuple(
    (method, tokens, MappingProxyType(dict(zip(("TGIF-QA", "MSVD-QA", "MSRVTT-QA", "ActivityNet-QA"), cells))))
    for method, tokens, cells in (
        ("Video-LLaVA", 2048, ((19.80, 2.53), (70.50, 3.93), (57.50, 3.50), (43.60, 3.81))),
        ("FastV", 1536, ((19.60, 2.54), (70.50, 3.94), (55.40, 3.47), (44.20, 3.86))),
        ("FasterVLM", 1536, ((19.80, 2.53), (72.00, 3.96), (57.10, 3.48), (45.00, 3.88))),
        ("FastV", 1024, ((19.50, 2.54), (70.40, 3.94), (54.80, 3.46), (43.40, 3.81))),
        ("FasterVLM", 1024, ((19.20, 2.51), (71.90, 3.96), (56.70, 3.47), (44.90, 3.87))),
        ("FastV", 512, ((19.40, 2.51), (69.10, 3.91), (54.60, 3.43), (41.50, 3.80))),
        ("FasterVLM", 512, ((17.90, 2.48), (70.20, 3.95), (56.60, 3.50), (44.70, 3.86))),
        ("FastV", 208, ((13.80, 2.40), (68.80, 3.90), (52.90, 3.40), (41.30, 3.79))),
        ("FasterVLM", 208, ((15.60, 2.39), (69.10, 3.92), (55.30, 3.43), (44.50, 3.82))),
        ("FastV", 104, ((10.60, 2.29), (64.10, 3.78), (52.40, 3.39), (40.30, 3.78))),
        ("FasterVLM", 104, ((14.00, 2.34), (65.30, 3.79), (53.80, 3.40), (43.70, 3.79))),
    )
)
# The table's Average columns (mean over the four benchmarks of % of the unpruned row): (accuracy %, score %).
FASTERVLM_VIDEO_AVERAGES: Mapping[tuple[str, int], tuple[float, float]] = MappingProxyType({
    ("Video-LLaVA", 2048): (100.00, 100.00),
    ("FastV", 1536): (99.18, 100.24), ("FasterVLM", 1536): (101.16, 100.45),
    ("FastV", 1024): (98.30, 99.79), ("FasterVLM", 1024): (100.14, 100.11),
    ("FastV", 512): (96.53, 99.12), ("FasterVLM", 512): (97.73, 99.88),
    ("FastV", 208): (88.50, 97.63), ("FasterVLM", 208): (93.76, 98.04),
    ("FastV", 104): (82.00, 95.64), ("FasterVLM", 104): (89.28, 96.37),
})
