"""Answer a video-QA question file (MSVD-QA, MSRVTT-QA, TGIF-QA, ActivityNet-QA) with Video-LLaVA, optionally pruned.

Inputs are Video-LLaVA's zero-shot QA files. `--question-file` is a JSON list of
{video_name, question, question_id}. `--gt-answers-file` (optional) is the matching list of
{answer, ...}, aligned by position. Each video is `--video-folder`/<video_name><ext>, with the first
of .mp4 .avi .mov .mkv .webm .gif that exists (a name that already has its extension is taken as
is). `--num-samples N` answers the first N questions (FasterVLM's table used 1K). The answers use
LLaVA's jsonl format, {question_id, prompt, text, answer_id, model_id, metadata}, plus `answer`
(ground truth) and `video`. The metadata records K per frame (`visual_token_num`), the frames
(`num_frames`) and the video tokens the LLM saw (`visual_tokens` = T x K). The file is batched,
resumable and sharded (`--num-chunks/--chunk-idx`, torchrun) like the image drivers. A video that
cannot be read stops the run with its question and file named; the answers already written stay.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Sequence

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter
from llava.eval.cli_args import add_common_args, check_answers_paths, check_driver_inputs

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif")

EPILOG = """examples:
  # MSVD-QA, first 1000 questions, 8 frames, K=13 per frame (104 video tokens), greedy:
  python -m llava.eval.model_video_qa --model-path LanguageBind/Video-LLaVA-7B-hf \\
      --question-file playground/data/eval/GPT_Zero_Shot_QA/MSVD_Zero_Shot_QA/test_q.json \\
      --gt-answers-file playground/data/eval/GPT_Zero_Shot_QA/MSVD_Zero_Shot_QA/test_a.json \\
      --video-folder playground/data/eval/GPT_Zero_Shot_QA/MSVD_Zero_Shot_QA/videos \\
      --answers-file answers/msvd_k13.jsonl --conv-mode llava_v1 --temperature 0 \\
      --num-samples 1000 --visual-token-num 13
"""


@dataclass
class VideoItem:
    """One video question: its id, the question text, the video file, and the ground truth (or None)."""

    question_id: Any
    question: str
    video: str
    answer: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        from llava.eval.answers_writer import answer_key

        return answer_key(self.question_id, self.question)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    add_common_args(parser)
    parser.add_argument("--video-folder", type=str, required=True, help="folder holding the videos")
    parser.add_argument("--gt-answers-file", type=str, default=None,
                        help="Video-LLaVA's answers JSON (a list aligned with the questions); copied into records")
    parser.add_argument("--num-frames", type=int, default=8, help="frames sampled uniformly per video (Video-LLaVA: 8)")
    parser.add_argument("--num-samples", type=int, default=None, help="answer only the first N questions")
    parser.add_argument("--video-mode", type=str, default="frame", choices=["frame", "temporal"],
                        help="K per frame (frame, FasterVLM's table) or T x K chosen over all frames (temporal)")
    return parser


def _read_json_list(path: str, what: str) -> list:
    try:
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}); expected Video-LLaVA's "
                         f"{what} (a JSON list)") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected Video-LLaVA's {what} (a JSON list), got {type(rows).__name__}")
    if not rows:
        raise ValueError(f"{path}: the {what} is empty (no questions); check --question-file")
    return rows


def resolve_video(folder: str, name: str) -> str | None:
    """The file of a video name in `folder`: the name itself if it has an extension and exists, else
    the first of VIDEO_EXTENSIONS that does; None when none exists."""
    direct = os.path.join(folder, name)
    if os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS and os.path.isfile(direct):
        return direct
    for ext in VIDEO_EXTENSIONS:
        if os.path.isfile(direct + ext):
            return direct + ext
    return None


def read_items(question_file: str, answers_file: str | None, video_folder: str,
               num_samples: int | None = None) -> list[VideoItem]:
    """Checked VideoItems from Video-LLaVA's question (and answer) files, the first `num_samples` of them."""
    questions = _read_json_list(question_file, "question file")
    answers = _read_json_list(answers_file, "answers file") if answers_file else None
    if answers is not None and len(answers) != len(questions):
        raise ValueError(f"{answers_file} holds {len(answers)} answers for the {len(questions)} questions of "
                         f"{question_file}; they must be aligned one to one (check --gt-answers-file)")
    if num_samples is not None:
        questions = questions[:num_samples]
    items, seen = [], set()
    for i, row in enumerate(questions):
        where = f"{question_file}[{i}]"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object like {{\"video_name\": ..., \"question\": ..., "
                             f"\"question_id\": ...}}, got {type(row).__name__}")
        for name in ("video_name", "question", "question_id"):
            if name not in row:
                raise ValueError(f"{where}: the question has no {name!r}")
        qid = row["question_id"]
        if isinstance(qid, bool) or not isinstance(qid, (str, int)):
            raise ValueError(f"{where}: question_id {qid!r} must be a string or an integer; fix the question file")
        if str(qid) in seen:
            raise ValueError(f"{where}: question_id {qid!r} repeats an earlier question's (the answers and the judge "
                             "are keyed by it); give every question its own id")
        seen.add(str(qid))
        if not isinstance(row["question"], str):
            raise ValueError(f"{where}: question {row['question_id']} has a non-text 'question'")
        answer = None
        if answers is not None:
            ref = answers[i]
            if not isinstance(ref, dict) or "answer" not in ref:
                raise ValueError(f"{answers_file}[{i}]: expected an object with an 'answer'")
            if isinstance(ref["answer"], bool) or not isinstance(ref["answer"], (str, int, float)):
                raise ValueError(f"{answers_file}[{i}]: the answer of question {qid} is {ref['answer']!r}, not a text; "
                                 "fix the answers file (the judge compares against it)")
            if "question_id" in ref and str(ref["question_id"]) != str(row["question_id"]):
                raise ValueError(f"{answers_file}[{i}] answers question {ref['question_id']}, but question {i} is "
                                 f"{row['question_id']}; the two files are not aligned")
            answer = str(ref["answer"])
        path = resolve_video(video_folder, str(row["video_name"]))
        if path is None:
            raise FileNotFoundError(f"question {row['question_id']}: video {row['video_name']!r} not found in "
                                    f"{video_folder} (tried {', '.join(VIDEO_EXTENSIONS)}; check --video-folder)")
        items.append(VideoItem(row["question_id"], row["question"], path, answer))
    return items


VIDEO_RUN_FIELDS = ("num_frames", "video_mode")  # beside the image drivers' RUN_FIELDS


def check_video_resume(path: str, args: argparse.Namespace) -> None:
    """Refuse to resume into `path` if a record was written with other frames or another video mode."""
    if not os.path.isfile(path):
        return
    want = {"num_frames": args.num_frames, "video_mode": args.video_mode}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                meta = json.loads(line).get("metadata") or {}
            except (json.JSONDecodeError, AttributeError):
                continue  # a killed run's partial line; the answers writer repairs it
            for name in VIDEO_RUN_FIELDS:
                if name in meta and meta[name] != want[name]:
                    raise ValueError(f"answers file {path} was written with {name}={meta[name]}, this run asks for "
                                     f"{want[name]}; use a new --answers-file or --no-resume")


def check_video_args(args: argparse.Namespace) -> None:
    """The video flags' checks, before anything slow is imported."""
    if not os.path.isdir(args.video_folder):
        raise FileNotFoundError(f"video folder {args.video_folder} not found (check --video-folder)")
    if args.gt_answers_file and not os.path.isfile(args.gt_answers_file):
        raise FileNotFoundError(f"answers file {args.gt_answers_file} not found (check --gt-answers-file)")
    if args.num_frames < 1:
        raise ValueError(f"--num-frames must be >= 1, got {args.num_frames}")
    if args.num_samples is not None and args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")


class _VideoDataset:
    """Prompt ids and preprocessed frames per item, so a DataLoader can decode ahead."""

    def __init__(self, items: Sequence[VideoItem], tokenizer, processor, conv_mode: str, num_frames: int):
        self.items, self.tokenizer, self.processor = items, tokenizer, processor
        self.conv_mode, self.num_frames = conv_mode, num_frames

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from llava.constants import DEFAULT_VIDEO_TOKEN
        from llava.eval.runner import build_prompt
        from llava.model.video_llava import tokenizer_visual_token
        from llava.video_io import load_video

        item = self.items[i]
        try:
            frames = load_video(item.video, self.processor, self.num_frames)  # [T, 3, S, S]
        except (OSError, ValueError) as err:
            raise ValueError(f"question {item.question_id}: {err}") from None
        prompt = build_prompt(DEFAULT_VIDEO_TOKEN + "\n" + item.question, self.conv_mode, with_image=False)
        return i, tokenizer_visual_token(prompt, self.tokenizer, return_tensors="pt"), frames


def _collate(pad_id: int):
    import torch

    def collate(batch):
        idx, ids, frames = zip(*batch)
        width = max(x.shape[0] for x in ids)
        input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):  # left padding, as generate wants
            input_ids[row, width - x.shape[0]:] = x
            mask[row, width - x.shape[0]:] = 1
        return list(idx), input_ids, mask, list(frames)

    return collate


def answer_videos(model, tokenizer, items: Sequence[VideoItem], files: dict, args: argparse.Namespace,
                  model_id: str) -> int:
    """Answer `items` into `files` ({K: path}); every K of a batch reuses one decode and one video-tower run.

    Returns the answers written."""
    import shortuuid
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from llava.eval.answers_writer import AnswerWriter
    from llava.eval.runner import GenerationArgs, _merge_reports, _visual_token_report, run_metadata

    if getattr(model, "video_processor", None) is None:
        raise ValueError(f"{args.model_path}: not a Video-LLaVA checkpoint (no video tower); "
                         "model_video_qa needs model_type 'video_llava'")
    gen = GenerationArgs(args.temperature, args.top_p, args.num_beams, args.max_new_tokens)
    resume = not args.no_resume
    sweep = len(files) > 1
    base = {**run_metadata(model, args), "num_frames": args.num_frames, "video_mode": model.pruning.video_mode}
    written = 0
    with_writers = [(k, AnswerWriter(path, resume=resume)) for k, path in files.items()]
    try:
        todo = [it for it in items if any(it.key not in w for _, w in with_writers)]
        if not todo:
            return 0
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        dataset = _VideoDataset(todo, tokenizer, model.video_processor, args.conv_mode, args.num_frames)
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                            collate_fn=_collate(pad_id))
        device, dtype = model.device, model.get_video_tower().dtype
        for idx, input_ids, mask, frames in tqdm(loader, desc=os.path.basename(str(next(iter(files.values())))),
                                                 unit="batch"):
            # one video-tower run per batch serves every K: [B, T, 3, S, S] -> signals of B x T frames
            signals = model.video_signals(torch.stack(frames).to(device=device, dtype=dtype))
            for k, writer in with_writers:
                rows = [r for r, i in enumerate(idx) if todo[i].key not in writer]
                if not rows:
                    continue
                budget = dict(visual_token_num=k) if sweep else {}
                out = model.generate(input_ids[rows].to(device), vision_signals=signals.index(rows),
                                     attention_mask=mask[rows].to(device), pad_token_id=pad_id,
                                     **budget, **gen.to_kwargs())
                mm = model.last_multimodal
                reports = _visual_token_report(mm, model.config.num_hidden_layers)
                texts = tokenizer.batch_decode(out, skip_special_tokens=True)
                for j, (r, text) in enumerate(zip(rows, texts)):
                    item = todo[idx[r]]
                    meta = {**base, **({"visual_token_num": k} if sweep else {}), **_merge_reports([reports[j]]),
                            "visual_tokens_per_frame": mm.frame_budgets[j]}
                    record = {"question_id": item.question_id, "prompt": item.question, "text": text.strip(),
                              "answer_id": shortuuid.uuid(), "model_id": model_id, "answer": item.answer,
                              "video": os.path.basename(item.video), "metadata": meta}
                    writer.write(record)
                    written += 1
    finally:
        for _, w in with_writers:
            w.close()
    return written


def run(args: argparse.Namespace) -> int:
    """Answer the question file described by the parsed flags; returns the answers this process wrote."""
    check_driver_inputs(args)
    check_video_args(args)
    items = read_items(args.question_file, args.gt_answers_file, args.video_folder, args.num_samples)

    from llava.eval.answers_writer import answered_ids, check_resume
    from llava.eval.distributed import DEFAULT_TIMEOUT_MIN, World, process_group
    from llava.eval.runner import _check_unique, answers_paths, budgets_of, expected_run_fields, \
        load_model_from_args, merge_rank_shards
    from llava.eval.sharding import balanced_chunk, shard_path
    from llava.pruning import parse_method_args

    _check_unique(items)
    parse_method_args(args.pruning_args, args.pruning_method)
    items = balanced_chunk(items, args.num_chunks, args.chunk_idx)
    targets = answers_paths(args.answers_file, budgets_of(args.visual_token_num))
    world = World.from_env()
    files = targets if world.size == 1 else {k: shard_path(p, world.rank, world.size) for k, p in targets.items()}
    check_answers_paths([*targets.values(), *files.values()],
                        {"--question-file": args.question_file, "--gt-answers-file": args.gt_answers_file})
    device = world.device(args.device)
    resume = not args.no_resume
    with process_group(world, device, getattr(args, "dist_timeout", DEFAULT_TIMEOUT_MIN)) as group:
        mine = world.shard(items)
        if resume:
            for k, path in files.items():
                check_resume(path, expected_run_fields(args, k))
                check_video_resume(path, args)
        left = max(sum(it.key not in (answered_ids(p, skip_partial_tail=True) if resume else set()) for it in mine)
                   for p in files.values())
        written = 0
        if left:
            tokenizer, model, _, model_name = load_model_from_args(args, device)
            model.pruning = model.pruning.replace(video_mode=args.video_mode) if args.video_mode != "frame" \
                else model.pruning
            written = answer_videos(model, tokenizer, mine, files, args, model_name)
        else:
            print(f"nothing left to answer in {', '.join(map(str, files.values()))}", file=sys.stderr)
        group.barrier()
        merge_rank_shards(world, items, targets)
    return written


def main(argv: list[str] | None = None) -> int:
    """Answer the questions; returns the answers this process wrote."""
    return run(build_parser().parse_args(argv))


def _cli(argv: list[str] | None = None) -> None:
    """The command line: exit status 0 on success (main returns the count of answers written, not a status)."""
    main(argv)


if __name__ == "__main__":
    run_main(_cli)
