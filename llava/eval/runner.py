"""The shared evaluation runner behind the `model_vqa*` drivers.

It owns what every driver needs: balanced sharding, prompt building with LLaVA's templates,
image loading and preprocessing in a DataLoader, batched (left-padded) generation, and the
incremental, resumable answers file. Drivers only turn their dataset rows into `VQAItem`s.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import shortuuid
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.eval.answers_writer import AnswerWriter


@dataclass
class VQAItem:
    """One question to answer.

    question_id: the id written to the answers file. question: the user text (without <image>).
    images: image paths (relative to the image folder), PIL images, or zero-argument callables that
    return one (decoded lazily). prompt_field: what the
    answer record's `prompt` holds (LLaVA writes the question text). extra: fields copied into the record.
    """

    question_id: Any
    question: str
    images: list = field(default_factory=list)
    prompt_field: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def record_prompt(self) -> str:
        """The answer record's `prompt` (with question_id, the key used for resuming)."""
        return self.prompt_field if self.prompt_field is not None else self.question


@dataclass
class GenerationArgs:
    """LLaVA's sampling flags; temperature 0 means greedy."""

    temperature: float = 0.2
    top_p: float | None = None
    num_beams: int = 1
    max_new_tokens: int = 128

    def to_kwargs(self) -> dict:
        kwargs: dict[str, Any] = dict(num_beams=self.num_beams, max_new_tokens=self.max_new_tokens, use_cache=True)
        kwargs["do_sample"] = self.temperature > 0
        if kwargs["do_sample"]:
            kwargs["temperature"] = self.temperature
            if self.top_p is not None:
                kwargs["top_p"] = self.top_p
        return kwargs


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """LLaVA's evaluation flags plus ours (budget, method, batching, resume, device)."""
    parser.add_argument("--model-path", type=str, default="facebook/opt-350m")
    parser.add_argument("--model-base", type=str, default=None)
    parser.add_argument("--image-folder", type=str, default="")
    parser.add_argument("--question-file", type=str, default="tables/question.jsonl")
    parser.add_argument("--answers-file", type=str, default="answer.jsonl")
    parser.add_argument("--conv-mode", type=str, default="llava_v1")
    parser.add_argument("--num-chunks", type=int, default=1)
    parser.add_argument("--chunk-idx", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--visual-token-num", type=int, default=None,
                        help="K visual tokens kept per image (default: all 576)")
    parser.add_argument("--pruning-method", type=str, default="fastervlm")
    parser.add_argument("--pruning-args", type=str, default=None, help="key=value,... options of the method")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for image preprocessing")
    parser.add_argument("--no-resume", action="store_true", help="start the answers file afresh")
    parser.add_argument("--device", type=str, default="auto")
    parser.add_argument("--torch-dtype", type=str, default="auto")
    parser.add_argument("--attn-implementation", type=str, default=None)
    parser.add_argument("--vision-tower", type=str, default=None, help="local CLIP folder overriding mm_vision_tower")


def balanced_chunk(items: Sequence, num_chunks: int, chunk_idx: int) -> list:
    """The chunk_idx-th of num_chunks contiguous shards whose sizes differ by at most one (may be empty)."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"--chunk-idx {chunk_idx} must be in [0, --num-chunks {num_chunks})")
    base, extra = divmod(len(items), num_chunks)
    start = chunk_idx * base + min(chunk_idx, extra)
    return list(items[start : start + base + (1 if chunk_idx < extra else 0)])


def build_prompt(question: str, conv_mode: str, with_image: bool, mm_use_im_start_end: bool = False) -> str:
    """LLaVA's prompt: the image token(s) and a newline before the question, in the conv template."""
    from llava.conversation import conv_templates

    if conv_mode not in conv_templates:
        raise ValueError(f"unknown --conv-mode {conv_mode!r}; available: {', '.join(sorted(conv_templates))}")
    if with_image:
        image = DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN if mm_use_im_start_end else DEFAULT_IMAGE_TOKEN
        question = image + "\n" + question
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], question)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def check_images_exist(items: Sequence[VQAItem], image_folder: str) -> None:
    """Fail before loading anything if an image file is missing, naming the question and the path."""
    for item in items:
        for image in item.images:
            if isinstance(image, str):
                path = os.path.join(image_folder, image)
                if not os.path.isfile(path):
                    raise FileNotFoundError(
                        f"question {item.question_id}: image file {path} not found (check --image-folder)"
                    )


class _PromptDataset(Dataset):
    """Tokenised prompts and preprocessed images, so a DataLoader can prepare them ahead."""

    def __init__(self, items, tokenizer, image_processor, model_config, conv_mode, image_folder):
        self.items, self.tokenizer, self.image_processor = items, tokenizer, image_processor
        self.model_config, self.conv_mode, self.image_folder = model_config, conv_mode, image_folder

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from llava.mm_utils import load_image, process_images, tokenizer_image_token

        item = self.items[i]
        images = []
        for image in item.images:
            if isinstance(image, Image.Image):
                images.append(image.convert("RGB"))
            elif callable(image):  # decoded lazily (e.g. base64 in a TSV), so only a batch is in memory
                try:
                    images.append(image().convert("RGB"))
                except Exception as err:
                    raise ValueError(f"question {item.question_id}: cannot decode its image: {err}") from err
            else:
                try:
                    images.append(load_image(os.path.join(self.image_folder, image)))
                except Exception as err:
                    raise ValueError(f"question {item.question_id}: cannot read image {image!r}: {err}") from err
        use_start_end = getattr(self.model_config, "mm_use_im_start_end", False)
        prompt = build_prompt(item.question, self.conv_mode, bool(images), use_start_end)
        input_ids = tokenizer_image_token(prompt, self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        pixels = process_images(images, self.image_processor, self.model_config) if images else None
        return i, input_ids, pixels, [im.size for im in images]


def _collate(pad_id: int):
    def collate(batch):
        idx, ids, pixels, sizes = zip(*batch)
        width = max(x.shape[0] for x in ids)
        input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for row, x in enumerate(ids):
            input_ids[row, width - x.shape[0] :] = x
            mask[row, width - x.shape[0] :] = 1
        images = [p for p in pixels if p is not None]
        stacked = torch.cat([p if p.ndim == 4 else p.unsqueeze(0) for p in images]) if images else None
        return list(idx), input_ids, mask, stacked, [s for group in sizes for s in group]

    return collate


def run_vqa(
    model,
    tokenizer,
    image_processor,
    items: Sequence[VQAItem],
    answers_file: str,
    conv_mode: str,
    gen: GenerationArgs,
    model_id: str,
    image_folder: str = "",
    batch_size: int = 1,
    num_workers: int = 0,
    resume: bool = True,
    metadata: dict | None = None,
    on_answer: Callable[[dict], None] | None = None,
) -> int:
    """Answer `items` into `answers_file` (skipping answered ids when resuming); returns how many were written."""
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    with AnswerWriter(answers_file, resume=resume) as writer:
        todo = [it for it in items if (it.question_id, it.record_prompt) not in writer]
        if not todo:
            return 0
        check_images_exist(todo, image_folder)
        dataset = _PromptDataset(todo, tokenizer, image_processor, model.config, conv_mode, image_folder)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate(pad_id))
        device = model.get_model().embed_tokens.weight.device
        dtype = model.get_vision_tower().dtype
        written = 0
        for idx, input_ids, mask, images, sizes in tqdm(loader, desc=os.path.basename(answers_file), unit="batch"):
            out = model.generate(
                input_ids.to(device),
                images=images.to(device=device, dtype=dtype) if images is not None else None,
                image_sizes=sizes,
                attention_mask=mask.to(device),
                pad_token_id=pad_id,
                **gen.to_kwargs(),
            )
            texts = tokenizer.batch_decode(out, skip_special_tokens=True)
            per_image = iter(_visual_token_report(model.last_multimodal))
            for row, text in zip(idx, texts):
                item = todo[row]
                seen = [next(per_image) for _ in item.images]
                record = {
                    "question_id": item.question_id,
                    "prompt": item.record_prompt,
                    "text": text.strip(),
                    "answer_id": shortuuid.uuid(),
                    "model_id": model_id,
                    **item.extra,
                    "metadata": {**(metadata or {}), **_merge_reports(seen)},
                }
                writer.write(record)
                written += 1
                if on_answer:
                    on_answer(record)
        return written


def _visual_token_report(encoded) -> list[dict]:
    """Per image: the visual tokens entering the LLM and, for in-LLM methods, the count after pruning."""
    if encoded is None:
        return []
    reports = [{"visual_tokens": n} for n in encoded.token_counts]
    if encoded.in_llm:
        for rep, after, avg in zip(reports, encoded.in_llm["kept_after_layer"], encoded.in_llm["layer_averaged"]):
            rep.update(prune_layer=encoded.in_llm["layer"], visual_tokens_after_layer=after,
                       layer_averaged_visual_tokens=avg)
    return reports


def _merge_reports(reports: list[dict]) -> dict:
    """One image: its numbers; several: a list per field; none: visual_tokens = []."""
    if len(reports) == 1:
        return reports[0]
    keys = reports[0].keys() if reports else ["visual_tokens"]
    return {key: [r[key] for r in reports] for key in keys}


def load_model_from_args(args: argparse.Namespace):
    """`load_pretrained_model` with the common flags; returns (tokenizer, model, image_processor, model_name)."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    model_path = os.path.expanduser(args.model_path)
    model_name = get_model_name_from_path(model_path)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_path,
        args.model_base,
        model_name,
        device=args.device,
        torch_dtype=args.torch_dtype,
        attn_implementation=args.attn_implementation,
        visual_token_num=args.visual_token_num,
        pruning_method=args.pruning_method,
        pruning_args=args.pruning_args,
        vision_tower_path=args.vision_tower,
    )
    return tokenizer, model, image_processor, model_name


def run_metadata(model, args: argparse.Namespace) -> dict:
    """What every answer records about the run."""
    return {
        "visual_token_num": model.config.visual_token_num,
        "pruning_method": model.config.pruning_method,
        "pruning_args": dict(model.config.pruning_args or {}),
        "conv_mode": args.conv_mode,
        "dtype": str(model.dtype).replace("torch.", ""),
    }


def run_from_args(args: argparse.Namespace, items: Sequence[VQAItem], extra_metadata: dict | None = None) -> int:
    """What every driver does after building its items: shard, load the model, answer."""
    items = balanced_chunk(items, args.num_chunks, args.chunk_idx)
    tokenizer, model, image_processor, model_name = load_model_from_args(args)
    gen = GenerationArgs(args.temperature, args.top_p, args.num_beams, args.max_new_tokens)
    return run_vqa(
        model, tokenizer, image_processor, items, args.answers_file, args.conv_mode, gen, model_name,
        image_folder=args.image_folder, batch_size=args.batch_size, num_workers=args.num_workers,
        resume=not args.no_resume, metadata={**run_metadata(model, args), **(extra_metadata or {})},
    )
