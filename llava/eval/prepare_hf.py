"""Build LLaVA-format evaluation files from the lmms-lab Hugging Face datasets, offline.

    python -m llava.eval.prepare_hf --benchmark pope --dataset /data/hf/POPE --out-dir playground/data/eval/pope

`--dataset` is a local folder (written by `datasets.save_to_disk`, or parquet / arrow files in the hub
repo layout, e.g. `data/test-00000-of-00003.parquet` or `<config>/<split>-*.parquet`) or a hub id such as
`lmms-lab/POPE`, which is looked up only in the local caches: its hub snapshot, else what `datasets`
itself finds offline (`HF_DATASETS_OFFLINE=1`, set by this CLI) in its cache (`--cache-dir`, default
`HF_DATASETS_CACHE`); nothing is downloaded (`llava.eval.catalogue.hf_data`). The benchmarks, their
converters and defaults are the records of `llava.eval.catalogue`. Images are copied as the dataset's
original encoded bytes (never re-encoded), under LLaVA's file names, and an identical existing file is
left alone, so a run can be repeated or resumed. Each run also writes `prepare_hf_info.json` (source, counts, files, notes).

What each benchmark produces inside --out-dir (LLaVA's `playground/data/eval/<bench>` layout):

  pope        llava_pope_test.jsonl, val2014/, labels/coco_pope_<category>.json
  mme         llava_mme.jsonl, MME_Benchmark_release_version/<subtask>/..., ground_truth.tsv
  textvqa     llava_textvqa_val_v051_ocr.jsonl, train_images/, TextVQA_0.5.1_val.json
  gqa         llava_gqa_testdev_balanced.jsonl, data/images/, data/testdev_balanced_questions.json
  scienceqa   llava_test_CQM-A.json, images/test/<pid>/image.png, problems.json, pid_splits.json
  mmbench     mmbench_dev_20230712.tsv (base64 images), llava_mmbench_dev_20230712.jsonl, images/
  mmbench_cn  the same with mmbench_dev_cn_20231003
  seed        llava-seed-bench.jsonl, SEED-Bench-image/, SEED-Bench-video-image/, SEED-Bench.json
  mmvet       llava-mm-vet.jsonl, images/, mm-vet.json
  llavabench  questions.jsonl, images/, context.jsonl, answers_gpt4.jsonl
  vqav2       llava_vqav2_mscoco_test-dev2015.jsonl, test2015/ (+ val annotations for the validation split)
  vizwiz      llava_test.jsonl, test/ (+ val.json for the val split)

The video-QA benchmarks (msvd, msrvtt, tgif, activitynet) are built from a local copy of Video-LLaVA's
GPT_Zero_Shot_QA/<Bench>_Zero_Shot_QA folder given by --dataset (test_q.json or FasterVLM's
test_q_1k.json, the matching answers, the videos): llava_test_q.json, llava_test_a.json (video names
resolved to files: ActivityNet's v_ prefix, the first of .mp4 .avi .mov .mkv) and the video folder,
linked rather than copied (`llava.eval.catalogue.video_qa`). `--limit N` keeps the first N questions;
the driver's `--num-samples N` does the same at answer time.

Where the lmms-lab data differs from what LLaVA-1.5 used (also recorded in the info file's notes):
  * POPE: lmms-lab has 3,000 questions per category; LLaVA's file has 2,910 for `random` (POPE commit
    e3e39262), so the random-category numbers are not directly comparable.
  * TextVQA: the "Reference OCR token" line uses the dataset's `ocr_tokens` column; that these are the
    same Rosetta tokens as in LLaVA's llava_textvqa_val_v051_ocr.jsonl is not verified. Without that
    column the prompt has no OCR line and the file is named llava_textvqa_val_v051_noocr.jsonl.
  * ScienceQA-IMG rows carry no problem id; ids are the row number unless --reference-questions gives
    LLaVA's llava_test_CQM-A.json, whose ids are then matched by prompt text and gold letter (rows with
    the same prompt and answer but different images take those ids in order).
  * SEED-Bench video questions use the middle frame of the dataset's frame list (LLaVA extracted the
    middle frame of each video itself); the frame file names are ours.
  * LLaVA-Bench: GPT-4 reference answers come from the `gpt_answer` column (answer_id is null).
  * MME and TextVQA question files repeat question_ids (LLaVA's ids: `<subtask>/<image>` and the
    TextVQA image id), exactly as LLaVA's own files do.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from llava.eval import catalogue
from llava.eval.catalogue.files import Context
from llava.eval.catalogue.hf_data import DatasetNotAvailable, open_split  # noqa: F401 (part of this CLI's API)
from llava.eval.io_utils import write_json

INFO_FILE = "prepare_hf_info.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", required=True,
                        help=f"one of: {', '.join(catalogue.names() + catalogue.video_names())} (or an alias)")
    parser.add_argument("--dataset", default=None, help="local dataset folder, or a hub id found in the local cache "
                        "(default: the lmms-lab id of the benchmark)")
    parser.add_argument("--split", default=None, help="split to convert (default: the one LLaVA-1.5 reports)")
    parser.add_argument("--config", default=None, help="dataset config / sub-folder (default per benchmark)")
    parser.add_argument("--out-dir", default=None, help="output folder (default: playground/data/eval/<LLaVA folder>)")
    parser.add_argument("--limit", type=int, default=None, help="convert only the first N questions (smoke tests)")
    parser.add_argument("--images-dataset", default=None, help="GQA: where the images config lives (default --dataset)")
    parser.add_argument("--images-config", default=None, help="GQA: images config (default <split>_balanced_images)")
    parser.add_argument("--reference-questions", default=None,
                        help="ScienceQA: LLaVA's llava_test_CQM-A.json, to take problem ids from (matched by prompt)")
    parser.add_argument("--cache-dir", default=None,
                        help="the datasets cache a hub id is looked up in offline (default: HF_DATASETS_CACHE)")
    parser.add_argument("--skip-missing-videos", action="store_true",
                        help="video-QA: leave out questions whose video is missing (default: stop, naming one)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Convert one benchmark; returns (and writes to <out-dir>/prepare_hf_info.json) a summary."""
    # Before `datasets` is imported (it reads these once), so load_dataset resolves hub ids from the cache only.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1 (the first N questions), got {args.limit}")
    bench = catalogue.get(args.benchmark)
    out_dir = Path(args.out_dir or Path("playground/data/eval") / bench.folder)
    ctx = Context(
        benchmark=bench.name, dataset=args.dataset or bench.hub_id, split=args.split or bench.split,
        config=args.config if args.config is not None else bench.config, out_dir=out_dir, limit=args.limit,
        images_dataset=args.images_dataset, images_config=args.images_config,
        reference_questions=args.reference_questions, progress=not args.no_progress, cache_dir=args.cache_dir,
        skip_missing=args.skip_missing_videos,
    )
    bench.converter(ctx)  # files and folders are created as they are written, so a failed open leaves nothing
    written = sum(s.written for s in ctx.stores)
    unchanged = sum(s.unchanged for s in ctx.stores)
    conflicts = [c for s in ctx.stores for c in s.conflicts]
    if conflicts:
        ctx.note(f"{len(conflicts)} row(s) named an image already written with different bytes; kept the first "
                 f"(e.g. {conflicts[0]})")
    info = {"benchmark": bench.name, "dataset": ctx.dataset, "config": ctx.config, "split": ctx.split,
            "limit": ctx.limit, "counts": ctx.counts, "images": {"written": written, "unchanged": unchanged},
            "files": ctx.files, "notes": ctx.notes}
    write_json(out_dir / INFO_FILE, info, indent=2)
    images = f"; images written {written}, unchanged {unchanged}" if ctx.stores else ""
    print(f"{bench.name}: {json.dumps(ctx.counts)}{images}")
    for kind, path in ctx.files.items():
        print(f"  {kind}: {path}")
    for message in ctx.notes:
        print(f"  note: {message}", file=sys.stderr)
    return info


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
