"""The shared evaluation runner behind the `model_vqa*` drivers.

It owns what every driver needs: balanced sharding, prompt building with LLaVA's templates,
image loading and preprocessing in a DataLoader, batched (left-padded) generation, and the
incremental, resumable answers file. Drivers only turn their dataset rows into `VQAItem`s.

Two ways to do more per run (EVAL.md, "Distributed and multi-node runs"):
- several processes (`torchrun` / `accelerate launch`): each rank answers its contiguous shard into
  `<answers stem>.rank{r}-of-{n}.jsonl` (see `llava.eval.distributed`), and rank 0 merges the shards
  in question order after a barrier (`llava.eval.merge`);
- a K sweep (`--visual-token-num 576,144,58,29`): the model is loaded once, each batch goes through
  the vision tower once, and every K gets its own answers file (`answers_paths`).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections import OrderedDict
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Mapping, Sequence

import shortuuid
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.eval.answers_writer import AnswerWriter, answer_key
from llava.eval.distributed import DEFAULT_TIMEOUT_MIN, World, process_group
from llava.eval.merge import merge_answers
from llava.eval.sharding import balanced_chunk, shard_path


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

    @property
    def key(self) -> tuple[str, str]:
        """(question_id, prompt) as answers files are keyed (MME/TextVQA reuse question ids)."""
        return answer_key(self.question_id, self.record_prompt)


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


# The flags and the checks that need no model live in torch-free modules, so that `--help` and
# input errors are fast; add_common_args and parse_visual_token_num are re-exported from here.
from llava.eval.answers_writer import answered_ids, check_resume  # noqa: E402
from llava.eval.cli_args import DTYPE_NAMES, add_common_args, check_answers_paths, parse_visual_token_num  # noqa: E402,F401


def budgets_of(visual_token_num) -> list[int | None]:
    """The budgets of a run: [None] (all tokens), [K], or the sweep's Ks in the order given."""
    if isinstance(visual_token_num, (list, tuple)):
        return list(visual_token_num)
    return [visual_token_num]


def answers_paths(answers_file: str, budgets: Sequence[int | None]) -> dict[int | None, str]:
    """The answers file of each K.

    A '{k}' anywhere in `answers_file` is replaced by K ('all' for no budget). Otherwise one K keeps
    the name as given, and a sweep writes `<stem>_k<K><suffix>` beside it (a.jsonl -> a_k58.jsonl).
    """
    if "{k}" in answers_file:
        return {k: answers_file.replace("{k}", "all" if k is None else str(k)) for k in budgets}
    if len(budgets) == 1:
        return {budgets[0]: answers_file}
    root, ext = os.path.splitext(answers_file)
    return {k: f"{root}_k{'all' if k is None else k}{ext or '.jsonl'}" for k in budgets}


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


def load_item_images(item: VQAItem, image_folder: str) -> list[Image.Image]:
    """A question's images as RGB PIL images (files under `image_folder`, PIL images, or lazy decoders)."""
    from llava.mm_utils import load_image, to_rgb

    images = []
    for image in item.images:
        if isinstance(image, Image.Image):
            images.append(to_rgb(image, f"of question {item.question_id}"))
        elif callable(image):  # decoded lazily (e.g. base64 in a TSV), so only a batch is in memory
            try:
                images.append(to_rgb(image(), "(decoded)"))
            except Exception as err:
                raise ValueError(f"question {item.question_id}: cannot decode its image: {err}") from err
        else:
            try:
                images.append(load_image(os.path.join(image_folder, image)))
            except Exception as err:
                raise ValueError(f"question {item.question_id}: cannot read image {image!r}: {err}") from err
    return images


class _ProcessorDataset(Dataset):
    """Prompts (the family's `ProcessorInputs.prompt`) and PIL images of processor families; the batch
    is encoded by the processor in the collate function, so DataLoader workers prepare it ahead."""

    def __init__(self, items, processor, builder, conv_mode: str | None, image_folder: str):
        self.items, self.processor, self.builder = items, processor, builder
        self.conv_mode, self.image_folder = conv_mode, image_folder

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        prompt = self.builder.prompt(self.processor, item.question, len(item.images), self.conv_mode)
        return i, prompt, load_item_images(item, self.image_folder)


def _processor_collate(processor, builder):
    def collate(batch):
        idx, prompts, images = (list(x) for x in zip(*batch))
        return idx, prompts, images, builder.encode(processor, prompts, images)

    return collate


class _PromptDataset(Dataset):
    """Tokenised prompts and preprocessed images, so a DataLoader can prepare them ahead.

    `reuse[i]`: item i's images are not decoded (pixels and sizes None), because the run already holds
    their tower output (the item before it shows the same image files, and the vision cache is on).
    """

    def __init__(self, items, tokenizer, image_processor, model_config, conv_mode, image_folder,
                 anyres_mode: str = "faithful", reuse: Sequence[bool] | None = None):
        self.items, self.tokenizer, self.image_processor = items, tokenizer, image_processor
        self.model_config, self.conv_mode, self.image_folder = model_config, conv_mode, image_folder
        self.anyres_mode = anyres_mode
        self.reuse = list(reuse) if reuse is not None else [False] * len(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from llava.mm_utils import process_images, tokenizer_image_token

        item = self.items[i]
        use_start_end = getattr(self.model_config, "mm_use_im_start_end", False)
        prompt = build_prompt(item.question, self.conv_mode, bool(item.images), use_start_end)
        input_ids = tokenizer_image_token(prompt, self.tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
        if self.reuse[i]:
            return i, input_ids, None, None
        images = load_item_images(item, self.image_folder)
        pixels = process_images(images, self.image_processor, self.model_config, self.anyres_mode) if images else None
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
        # per item: [3, S, S] one image, [n, 3, S, S] images or one anyres stack, [1, n, 3, S, S] anyres
        # (or a list of [V_i, 3, S, S] anyres stacks) -> [n_rows, 3, S, S] rows (anyres: all views)
        rows = [None if p is None else torch.cat(list(p)) if isinstance(p, (list, tuple)) else
                p.flatten(0, 1) if p.ndim == 5 else p if p.ndim == 4 else p[None] for p in pixels]
        stacked = torch.cat([r for r in rows if r is not None]) if any(r is not None for r in rows) else None
        pixel_spans = [0 if r is None else r.shape[0] for r in rows]  # tensor rows per item (0: not decoded)
        # sizes per item: a list of (w, h), or None for an item whose images were not decoded (reused)
        return list(idx), input_ids, mask, stacked, list(sizes), pixel_spans

    return collate


def run_vqa(
    model,
    tokenizer,
    image_processor,
    items: Sequence[VQAItem],
    answers_file: str | Mapping[int, str],
    conv_mode: str,
    gen: GenerationArgs,
    model_id: str,
    image_folder: str = "",
    batch_size: int = 1,
    num_workers: int = 0,
    resume: bool = True,
    metadata: dict | None = None,
    on_answer: Callable[[dict], None] | None = None,
    joint_sweep: bool = False,
    truncate_prompts: bool = False,
    share_prefix: bool = True,
    vision_cache_size: int = 64,
    on_generated: Callable[[tuple, Any, torch.Tensor, torch.Tensor], None] | None = None,
    inputs_builder=None,
) -> int:
    """Answer `items` into `answers_file` (skipping answered ids when resuming); returns how many were written.

    `answers_file` is one path (answered at the model's configured K) or a K sweep {K: path}: then each
    batch goes through the vision tower once (`model.vision_signals`) and is answered at every K that
    still lacks it, each K into its own file with `metadata["visual_token_num"] = K`. The Ks of a batch
    are generated one K after the other (the same batches as separate runs), or with `joint_sweep` in
    one generate call of batch x K rows. A text-only question is answered once per batch and its
    answer reused for every K (without an image, K cannot change it). A prompt longer than the model's
    context stops the run naming the question, unless `truncate_prompts` (then a warning names it).

    The work is ordered by image (first appearance; `group_by_image`). Each distinct image goes
    through the tower once per run: its signals are kept in an LRU of `vision_cache_size` images,
    keyed by image path and preprocessing settings, and serve every K and every later batch; the
    image file is then decoded and preprocessed only for its first question. With `share_prefix`
    and a question-independent method (stage 'pre_llm' and not reading the question text, greedy or
    sampling without beams), each
    image's prompt prefix is prefilled once per K and every question about it continues from it
    (`llava.model.shared_prefix`); an image with a single question left, and a text-only question,
    take the plain path. Records say which in `metadata["shared_prefix"]`. Between batches at most
    one prefix per K is kept (the image whose questions go on), at most two per K during a batch.
    `on_generated(key, K, tokens [T], logits [T, V])`, if given, receives each answer's new tokens
    and the raw logits of every step (for comparing paths, e.g. the sharing bench).

    `inputs_builder` (a family's `llava.model.inputs_builder.ProcessorInputs`; `image_processor` is then
    the checkpoint's processor): prompts come from the chat template (`conv_mode` None) or from
    `conv_mode` with the family's image placeholder, and the processor encodes each batch. Such
    families take the plain path: no vision cache, no shared prefix (records say
    `shared_prefix: false`), and a sweep generates its Ks one after the other.
    """
    from llava.model.shared_prefix import PrefixStore

    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    sweep = not isinstance(answers_file, (str, os.PathLike))
    paths = dict(answers_file) if sweep else {"config": answers_file}
    if resume:  # before any file is opened: a refused run writes nothing
        for k, path in paths.items():
            check_resume(path, {"model_id": model_id, **(metadata or {}), **({"visual_token_num": k} if sweep else {})})
    with ExitStack() as stack:
        writers = {k: stack.enter_context(AnswerWriter(path, resume=resume)) for k, path in paths.items()}
        todo = group_by_image([it for it in items if any(it.key not in w for w in writers.values())])
        if not todo:
            return 0
        check_images_exist(todo, image_folder)
        if inputs_builder is not None:
            return _answer_with_processor(model, tokenizer, image_processor, inputs_builder, todo, writers, sweep,
                                          conv_mode, gen, model_id, image_folder, batch_size, num_workers, metadata,
                                          on_answer, truncate_prompts, on_generated)
        image_keys_all = [_image_key(it) for it in todo]
        # the tower output of a question's images is already held when the question before it shows the
        # same files (the work is grouped by image, so that output is the cache's most recent entry, or
        # computed earlier in the same batch): such questions skip decoding and preprocessing
        reuse = [vision_cache_size > 0 and i > 0 and key is not None and key == image_keys_all[i - 1]
                 for i, key in enumerate(image_keys_all)]
        per_image = {}  # image key -> questions about it left in this run
        for key in image_keys_all:
            per_image[key] = per_image.get(key, 0) + 1
        dataset = _PromptDataset(todo, tokenizer, image_processor, model.config, conv_mode, image_folder,
                                 model.pruning.anyres_mode, reuse)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_collate(pad_id))
        device = model.get_model().embed_tokens.weight.device
        dtype = model.get_vision_tower().dtype
        needs = model.pruning_needs()
        shared = share_prefix and _shares_prefix(model, gen)
        vision_cache = VisionCache(vision_cache_size)
        prefixes = PrefixStore()  # trimmed by `retain` for each batch (below): at most 2 per K
        settings = (getattr(model.config, "image_aspect_ratio", None), model.pruning.anyres_mode, needs)
        written = 0
        held: tuple | None = None  # (image key, its sizes, its tensor rows): the image the reused items show
        for idx, input_ids, mask, images, item_sizes, pixel_spans in tqdm(
            loader, desc=os.path.basename(str(next(iter(paths.values())))), unit="batch"
        ):
            images = images.to(device=device, dtype=dtype) if images is not None else None
            image_keys = [image_keys_all[i] for i in idx]
            spans = []  # vision-signal rows per item (one per image, or per anyres view)
            for r, key in enumerate(image_keys):
                if item_sizes[r] is None:  # not decoded: the same images as the question before it
                    assert held is not None and held[0] == key, "a reused item follows its image's first question"
                    item_sizes[r] = held[1]
                    spans.append(held[2])
                else:
                    spans.append(pixel_spans[r])
                    held = (key, item_sizes[r], pixel_spans[r]) if key is not None else None
            counts = [len(s) for s in item_sizes]  # images per item
            sizes = [s for group in item_sizes for s in group]
            first_image = [sum(counts[:r]) for r in range(len(idx))]
            first_row = [sum(spans[:r]) for r in range(len(idx))]
            first_pixel = [sum(pixel_spans[:r]) for r in range(len(idx))]
            # [n_pixel_rows, 3, S, S] -> VisionSignals with sum(spans) rows, the cached ones not recomputed
            vision = vision_cache.signals(model, images, needs, [None if key is None else (key, settings)
                                                                 for key in image_keys], first_pixel, spans,
                                          pixel_spans)
            # Prefixes kept between generate calls: the first image's (computed by the batch before, when
            # its questions started there) and the last image's (when its questions go on in the next
            # batch); one per K each. The other images' prefixes live only inside their generate call.
            before, after = idx[0] - 1, idx[-1] + 1
            carried = image_keys[0] if before >= 0 and image_keys_all[before] == image_keys[0] else None
            carry = image_keys[-1] if after < len(todo) and image_keys_all[after] == image_keys[-1] else None
            prefixes.retain(lambda key, keep=(carried, carry): key[0] is not None and key[0] in keep)
            need = {k: [r for r, i in enumerate(idx) if todo[i].key not in w] for k, w in writers.items()}
            # one generate call per K, or one for all; each job is (row of the batch, K)
            if joint_sweep:
                calls = [[(r, k) for k in need for r in need[k]]]
            else:
                calls = [[(r, k) for r in need[k]] for k in need]
            batch = _Batch([todo[i].question_id for i in idx], input_ids, mask, sizes, counts, first_image,
                           first_row, spans, vision, image_keys, pad_id, device,
                           [relevance_text(todo[i].question) for i in idx])
            answers: dict[tuple, tuple[str, list[dict], bool]] = {}  # (row, K) -> (text, per-image reports, shared)
            text_only: dict[int, tuple[str, list[dict], bool]] = {}  # row -> the answer shared by every K
            claimed: set[int] = set()
            for call in calls:
                jobs = []
                for r, k in call:
                    if not counts[r]:
                        if r in claimed:
                            continue
                        claimed.add(r)
                    jobs.append((r, k))
                if not jobs:
                    continue
                # a question continues from its image's prefix when another question about that image is
                # left in the run; the others (one question per image, text-only) take the plain path
                shares = {job: shared and counts[job[0]] > 0 and image_keys[job[0]] is not None
                          and per_image[image_keys[job[0]]] > 1 for job in jobs}
                for share in (True, False):
                    part = [job for job in jobs if shares[job] == share]
                    if not part:
                        continue
                    done = _generate(model, tokenizer, batch, part, share, prefixes, sweep, gen, truncate_prompts,
                                     with_logits=on_generated is not None)
                    for job, (text, reports, tokens, logits) in zip(part, done):
                        answers[job] = (text, reports, share)
                        if on_generated is not None:
                            on_generated(todo[idx[job[0]]].key, job[1], tokens, logits)
                        if not counts[job[0]]:
                            text_only[job[0]] = answers[job]
            for k, writer in writers.items():
                run_meta = {**(metadata or {}), **({"visual_token_num": k} if sweep else {})}
                for r in need[k]:
                    item = todo[idx[r]]
                    text, reports, was_shared = answers.get((r, k)) or text_only[r]
                    record = _answer_record(item, text, reports, was_shared, model_id, run_meta)
                    writer.write(record)
                    written += 1
                    if on_answer:
                        on_answer(record)
        return written


def _answer_record(item: VQAItem, text: str, reports: list[dict], shared: bool, model_id: str, run_meta: dict) -> dict:
    """One line of the answers file (LLaVA's fields, the item's extras, and the run's metadata)."""
    return {
        "question_id": item.question_id,
        "prompt": item.record_prompt,
        "text": text.strip(),
        "answer_id": shortuuid.uuid(),
        "model_id": model_id,
        **item.extra,
        "metadata": {**run_meta, **_merge_reports(reports), "shared_prefix": shared},
    }


def _num_llm_layers(model) -> int:
    """The LLM's decoder layers: the config may be the LLM's own or a composite one (Qwen-VL, OneVision),
    whose `get_text_config()` is the LLM's."""
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return int(text.num_hidden_layers)


def _pixel_dtype(model) -> torch.dtype:
    """The dtype images enter the model in: its vision tower's, else the model's."""
    tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
    return tower.dtype if tower is not None else model.dtype


def _answer_with_processor(model, tokenizer, processor, builder, todo: Sequence[VQAItem], writers: dict, sweep: bool,
                           conv_mode: str | None, gen: GenerationArgs, model_id: str, image_folder: str,
                           batch_size: int, num_workers: int, metadata: dict | None, on_answer, truncate_prompts: bool,
                           on_generated) -> int:
    """`run_vqa` for processor families (`inputs_builder`): one generate call per batch and K, the plain path.

    Each batch is encoded once by the processor (in the DataLoader); a call that answers only some of
    its rows (a resumed K) encodes those rows again. A text-only question is answered once per batch
    and its answer serves every K, as on the LLaVA path.
    """
    from llava.pruning import get_method

    dataset = _ProcessorDataset(todo, processor, builder, conv_mode, image_folder)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=_processor_collate(processor, builder))
    device, dtype = model.device, _pixel_dtype(model)
    # finished rows are filled with the pad token (eos when the tokenizer has none, as transformers does)
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
    layers = _num_llm_layers(model)
    reads_question = get_method(model.pruning.method).question_dependent
    written = 0
    for idx, prompts, images, encoded in tqdm(loader, desc=os.path.basename(str(next(iter(writers.values())).path)),
                                              unit="batch"):
        counts = [len(group) for group in images]
        need = {k: [r for r, i in enumerate(idx) if todo[i].key not in w] for k, w in writers.items()}
        answers: dict[tuple, tuple[str, list[dict]]] = {}
        text_only: dict[int, tuple[str, list[dict]]] = {}
        for k, rows in need.items():
            rows = [r for r in rows if counts[r] or r not in text_only]
            if not rows:
                continue
            enc = encoded if rows == list(range(len(idx))) else \
                builder.encode(processor, [prompts[r] for r in rows], [images[r] for r in rows])
            pruning = model.pruning.replace(visual_token_num=k) if sweep else model.pruning
            extra = dict(texts=[relevance_text(todo[idx[r]].question) for r in rows]) if reads_question else {}
            if truncate_prompts:
                extra["truncate_prompts"] = True
            with _named_context_overflow([todo[idx[r]].question_id for r in rows], truncate_prompts):
                out = model.generate(**builder.generate_kwargs(enc, device, dtype), pruning=pruning,
                                     pad_token_id=pad_id, **extra, **gen.to_kwargs(),
                                     **(dict(output_logits=True, return_dict_in_generate=True) if on_generated else {}))
            tokens = out.sequences if on_generated else out  # [B, T] new tokens
            per_image = iter(_visual_token_report(getattr(model, "last_multimodal", None), layers))
            for b, (r, text) in enumerate(zip(rows, tokenizer.batch_decode(tokens, skip_special_tokens=True))):
                answers[(r, k)] = (text, [next(per_image) for _ in range(counts[r])])
                if not counts[r]:
                    text_only[r] = answers[(r, k)]
                if on_generated is not None:
                    on_generated(todo[idx[r]].key, k, tokens[b], torch.stack(out.logits, 1)[b])
        for k, writer in writers.items():
            run_meta = {**(metadata or {}), **({"visual_token_num": k} if sweep else {})}
            for r in need[k]:
                text, reports = answers.get((r, k)) or text_only[r]
                record = _answer_record(todo[idx[r]], text, reports, False, model_id, run_meta)
                writer.write(record)
                written += 1
                if on_answer:
                    on_answer(record)
    return written


@dataclass
class _Batch:
    """One loader batch, ready for generation: prompts, image sizes and the rows' vision signals."""

    question_ids: list
    input_ids: torch.Tensor  # [B, L], left-padded
    mask: torch.Tensor  # [B, L]
    sizes: list  # (w, h) of every image, item after item
    counts: list[int]  # images per item
    first_image: list[int]  # index into sizes of each item's first image
    first_row: list[int]  # index into vision of each item's first signal row
    spans: list[int]  # signal rows per item
    vision: Any  # VisionSignals with sum(spans) rows, or None
    image_keys: list
    pad_id: int
    device: Any
    texts: list[str]  # each item's question without the answer-format suffix (for CDPruner's relevance)


def _generate(model, tokenizer, batch: _Batch, jobs: list[tuple[int, Any]], share: bool, prefixes, sweep: bool,
              gen: GenerationArgs, truncate_prompts: bool, with_logits: bool = False) -> list[tuple]:
    """Answer the jobs (row, K) of a batch in one generate call.

    Returns per job (text, per-image reports, new tokens [T], logits [T, V] or None). With `share`,
    each row continues from its image's prefix for its K (`generate_shared`), else the whole prompt
    is prefilled (`model.generate`).
    """
    from llava.model.shared_prefix import generate_shared

    rows = [r for r, _ in jobs]
    tensor_rows = [j for r in rows for j in range(batch.first_row[r], batch.first_row[r] + batch.spans[r])]
    if tensor_rows == list(range(sum(batch.spans))):
        picked = batch.vision
    elif tensor_rows:
        picked = batch.vision.index(tensor_rows)
    else:
        picked = None
    kwargs = dict(vision_signals=picked, texts=[batch.texts[r] for r in rows])
    if sweep:
        kwargs["visual_token_num"] = [k for r, k in jobs for _ in range(batch.counts[r])]
    if share:
        generate = partial(generate_shared, model, prefix_keys=[(batch.image_keys[r], k) for r, k in jobs],
                           store=prefixes)
    else:
        generate = model.generate
    with _named_context_overflow([batch.question_ids[r] for r in rows], truncate_prompts):
        out = generate(
            batch.input_ids[rows].to(batch.device),
            image_sizes=[batch.sizes[j] for r in rows
                         for j in range(batch.first_image[r], batch.first_image[r] + batch.counts[r])],
            attention_mask=batch.mask[rows].to(batch.device),
            pad_token_id=batch.pad_id,
            truncate_prompts=truncate_prompts,
            **kwargs,
            **gen.to_kwargs(),
            **(dict(output_logits=True, return_dict_in_generate=True) if with_logits else {}),
        )
    logits = torch.stack(out.logits, 1) if with_logits else None  # T x [B, V] -> [B, T, V]
    tokens = out.sequences if with_logits else out  # [B, T] new tokens
    per_image = iter(_visual_token_report(model.last_multimodal, _num_llm_layers(model)))
    return [(text, [next(per_image) for _ in range(batch.counts[r])], tokens[b], None if logits is None else logits[b])
            for b, ((r, _), text) in enumerate(zip(jobs, tokenizer.batch_decode(tokens, skip_special_tokens=True)))]


def _image_key(item: VQAItem) -> tuple[str, ...] | None:
    """The images of a question as a hashable key (their paths), or None when they are not files."""
    if item.images and all(isinstance(im, str) for im in item.images):
        return tuple(item.images)
    return None


def group_by_image(items: Sequence[VQAItem]) -> list[VQAItem]:
    """The items ordered by image (in order of first appearance), each image's questions in their order.

    Questions whose images are not files (PIL images, lazy decoders) and text-only questions keep
    their own place in the order of first appearance.
    """
    first: dict[Any, int] = {}
    order = []
    for pos, item in enumerate(items):
        key = _image_key(item)
        key = ("own", pos) if key is None else key
        order.append((first.setdefault(key, pos), pos))
    return [items[pos] for _, pos in sorted(order)]


def _shares_prefix(model, gen: GenerationArgs) -> bool:
    """Whether this run's questions about one image may continue from one prefix cache.

    Only for question-independent methods: the pre-LLM methods that do not read the question (and no
    pruning). In-LLM methods (fastv) choose tokens from the question's attention, and CDPruner from its
    text: they take the plain path.
    """
    from llava.pruning import get_method

    return not get_method(model.pruning.method).question_dependent and gen.num_beams == 1


# The answer-format instructions LLaVA's question files append to the question. CDPruner scores the
# patches against the question without them (its drivers remove them with str.replace).
INSTRUCTION_SUFFIXES = (
    "\nAnswer the question using a single word or phrase.",
    "\nAnswer with the option's letter from the given choices directly.",
    "\n请直接回答选项字母。",  # MMBench-CN (the official MMBench driver passes the question before it)
)


def relevance_text(question: str) -> str:
    """The question as question-aware methods (CDPruner) read it: LLaVA's answer-format suffixes removed."""
    for suffix in INSTRUCTION_SUFFIXES:
        question = question.replace(suffix, "")
    return question


class VisionCache:
    """A bounded LRU of per-question VisionSignals (the rows of its images), keyed by image paths and settings."""

    def __init__(self, size: int = 64) -> None:
        if size < 0:
            raise ValueError(f"--vision-cache-size must be >= 0, got {size}")
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self.tower_rows = 0  # image rows (views) the tower ran on, for tests and the bench

    def signals(self, model, images, needs, keys, first_pixel, spans, pixel_spans=None):
        """VisionSignals for a batch's items (sum(spans) rows), running the tower only on images not cached.

        images: [n_pixel_rows, 3, S, S], the decoded items' rows (item r from first_pixel[r], pixel_spans[r]
        rows); an item without pixels (pixel_spans[r] == 0 < spans[r]) must be cached or share its key
        with a decoded item of the batch.
        """
        from llava.pruning.base import VisionSignals

        pixel_spans = spans if pixel_spans is None else pixel_spans
        if not any(spans):
            return None
        if not self.size:  # no cache: every question runs the tower on its own images (the plain path)
            keys = [None] * len(keys)
        per_item, compute = {}, []
        for r, key in enumerate(keys):
            if not spans[r]:
                continue
            hit = self._items.get(key) if key is not None else None
            if hit is not None:
                self._items.move_to_end(key)
                per_item[r] = hit
            elif key is None or key not in [keys[c] for c in compute]:
                if pixel_spans[r] != spans[r]:
                    raise RuntimeError(f"batch row {r}: its images were not decoded and their tower output is "
                                       "not held (vision cache)")
                compute.append(r)
        if compute:
            rows = [j for r in compute for j in range(first_pixel[r], first_pixel[r] + spans[r])]
            fresh = model.vision_signals(images[rows], needs=needs)
            self.tower_rows += len(rows)
            start = 0
            for r in compute:
                per_item[r] = fresh.index(slice(start, start + spans[r]))
                start += spans[r]
                if keys[r] is not None and self.size:
                    self._items[keys[r]] = per_item[r]
                    while len(self._items) > self.size:
                        self._items.popitem(last=False)
        parts = [per_item[r] if r in per_item else per_item[next(c for c in compute if keys[c] == keys[r])]
                 for r in range(len(keys)) if spans[r]]
        if len(parts) == 1:
            return parts[0]
        return VisionSignals(torch.cat([p.features for p in parts]),
                             **{n: torch.cat([p.values[n] for p in parts]) for n in parts[0].values})


@contextmanager
def _named_context_overflow(question_ids: Sequence[Any], truncate_prompts: bool):
    """Name the question of a prompt row that overflows the context (error), or that was truncated (warning).

    Warnings are only intercepted under `truncate_prompts`, so other runs show them as usual.
    """
    from llava.model.context import ContextOverflowError, ContextOverflowWarning

    with ExitStack() as stack:
        caught = stack.enter_context(warnings.catch_warnings(record=True)) if truncate_prompts else []
        if truncate_prompts:
            warnings.simplefilter("always", ContextOverflowWarning)
        try:
            yield
        except ContextOverflowError as err:
            raise ValueError(f"question {question_ids[err.row]}: the prompt holds {err.length} tokens (text and "
                             f"visual), more than the model's context of {err.limit}; shorten it or lower K, or pass "
                             f"--truncate-prompts to cut it to {err.limit}") from None
    for w in caught:
        if isinstance(w.message, ContextOverflowWarning):
            print(f"warning: question {question_ids[w.message.row]}: prompt truncated from {w.message.length} to "
                  f"{w.message.limit} tokens (--truncate-prompts)", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _visual_token_report(encoded, num_layers: int) -> list[dict]:
    """Per image: the visual tokens entering the LLM, the count after each pruning layer and the
    layer-averaged count, the same fields for every method (`llava.pruning.accounting`), plus the
    image's unpruned count N_i and the budget K_i asked for (every image family records them)."""
    from llava.pruning.accounting import visual_token_accounting

    if encoded is None:
        return []
    reports = visual_token_accounting(encoded.token_counts, num_layers, encoded.in_llm)
    if getattr(encoded, "unpruned_counts", None) is not None:
        for rep, n_full, k in zip(reports, encoded.unpruned_counts, encoded.budgets):
            rep.update(visual_tokens_unpruned=n_full, visual_token_budget=k)
    return reports


def _merge_reports(reports: list[dict]) -> dict:
    """One image: its numbers; several: a list per field; none (a text-only question): every field []."""
    from llava.pruning.accounting import ACCOUNTING_KEYS

    if len(reports) == 1:
        return reports[0]
    keys = reports[0].keys() if reports else (*ACCOUNTING_KEYS, "visual_tokens_unpruned", "visual_token_budget")
    return {key: [r[key] for r in reports] for key in keys}


def load_model_from_args(args: argparse.Namespace, device: str | None = None):
    """`load_pretrained_model` with the common flags; returns (tokenizer, model, image_processor, model_name).

    `device` overrides --device (a rank's cuda:LOCAL_RANK); an indexed CUDA device holds the whole
    model, never spread over the other GPUs. A sweep loads the model at its first K.
    """
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model
    from llava.pruning import parse_method_args

    device = device or args.device
    placement = {"device_map": {"": device}} if str(device).startswith("cuda:") else {}
    model_path = os.path.expanduser(args.model_path)
    model_name = get_model_name_from_path(model_path)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        model_path,
        args.model_base,
        model_name,
        device=device,
        torch_dtype=args.torch_dtype,
        attn_implementation=args.attn_implementation,
        visual_token_num=budgets_of(args.visual_token_num)[0],
        pruning_method=args.pruning_method,
        pruning_args=parse_method_args(args.pruning_args, args.pruning_method),
        vision_tower_path=args.vision_tower,
        anyres_mode=args.anyres_mode,
        vision_attn_implementation=getattr(args, "vision_attn", "sdpa"),
        allow_missing_weights=getattr(args, "allow_missing_weights", False),
        **placement,
    )
    keep_ratio = getattr(args, "visual_token_ratio", None)
    if keep_ratio is not None:  # the kept fraction, resolved per image by PruningConfig.budget
        model.pruning = model.pruning.replace(keep_ratio=keep_ratio)
    if getattr(args, "position_mode", None) is not None:  # recorded by PruningConfig.to_metadata
        model.pruning = model.pruning.replace(position_mode=args.position_mode)
    return tokenizer, model, image_processor, model_name


def model_family(model_path: str) -> str:
    """The registered family (`llava.model.families`) of a checkpoint, from its config.json alone."""
    from llava.model.builder import read_config
    from llava.model.families import family_of
    from llava.model.multimodal_encoder.builder import resolve_pretrained_dir

    path = resolve_pretrained_dir(os.path.expanduser(model_path))
    return family_of(read_config(path), path).name


def resolve_conv_mode(args: argparse.Namespace):
    """(conv mode, inputs builder) of a run: an unset --conv-mode means the checkpoint's chat template for
    families with an inputs builder (conv mode None), and LLaVA's llava_v1 for the others."""
    from llava.model.inputs_builder import get_inputs_builder

    builder = get_inputs_builder(model_family(args.model_path))
    if args.conv_mode is None:
        return (None if builder is not None else "llava_v1"), builder
    return args.conv_mode, builder


def run_metadata(model, args: argparse.Namespace) -> dict:
    """What every answer records about the run (a sweep overrides visual_token_num per K)."""
    pruning = model.pruning
    tower = model.get_vision_tower() if hasattr(model, "get_vision_tower") else None
    config = getattr(tower, "config", None)
    anyres = model.is_anyres() if hasattr(model, "is_anyres") else False
    return {
        **pruning.to_metadata(),
        "conv_mode": args.conv_mode,  # None: the checkpoint's own chat template
        "dtype": str(model.dtype).replace("torch.", ""),
        "vision_attn": getattr(config, "_attn_implementation", None) or getattr(args, "vision_attn", "sdpa"),
        **({"anyres_mode": pruning.anyres_mode} if anyres else {}),
    }


def run_from_args(args: argparse.Namespace, items: Sequence[VQAItem], extra_metadata: dict | None = None) -> int:
    """What every driver does after building its items: chunk, shard over ranks, answer, merge.

    `--num-chunks/--chunk-idx` pick the chunk first; under torchrun / accelerate each of the
    WORLD_SIZE ranks then answers its contiguous part of that chunk into
    `<answers stem>.rank{r}-of-{n}.jsonl`, and rank 0 merges them into the answers file (one per K)
    after a barrier. Returns the number of answers this process wrote.
    """
    from llava.pruning import parse_method_args

    world = World.from_env()
    conv_mode, _ = resolve_conv_mode(args)
    args = argparse.Namespace(**{**vars(args), "conv_mode": conv_mode})
    _check_unique(items)
    items = balanced_chunk(items, args.num_chunks, args.chunk_idx)
    parse_method_args(args.pruning_args, args.pruning_method)  # a bad option fails before the model loads
    targets = answers_paths(args.answers_file, budgets_of(args.visual_token_num))
    if world.size == 1:
        files = targets
    else:
        files = {k: shard_path(path, world.rank, world.size) for k, path in targets.items()}
    check_answers_paths([*targets.values(), *files.values()], _input_files(args))
    device = world.device(args.device)
    with process_group(world, device, getattr(args, "dist_timeout", DEFAULT_TIMEOUT_MIN)) as group:
        written = _answer_shard(args, world.shard(items), files, extra_metadata, device)
        group.barrier()
        merge_rank_shards(world, items, targets)
    return written


def merge_rank_shards(world, items: Sequence[VQAItem], targets: Mapping) -> None:
    """On rank 0 of a multi-rank run (after the barrier): merge every rank's shard of each answers file."""
    if world.size > 1 and world.is_main:
        keys = [item.key for item in items]
        for path in targets.values():
            n = merge_answers(keys, [shard_path(path, r, world.size) for r in range(world.size)], path)
            print(f"[rank 0] merged {world.size} shards, {n} answers -> {path}", file=sys.stderr)


def _check_unique(items: Sequence[VQAItem]) -> None:
    """Answers are keyed by (question_id, prompt), so two identical questions could never both be answered."""
    seen, repeated = set(), []
    for item in items:
        if item.key in seen:
            repeated.append(item.key)
        seen.add(item.key)
    if repeated:
        shown = ", ".join(f"({qid!r}, {prompt[:40]!r})" for qid, prompt in repeated[:20])
        raise ValueError(f"{len(repeated)} question(s) repeat an earlier (question_id, prompt): {shown}; "
                         "remove the duplicates from the question file")


def _input_files(args: argparse.Namespace) -> dict[str, str | None]:
    """The files a run reads, by flag: an answers path must be none of them (images and weights are
    read from folders, which an answers file cannot be)."""
    return {"--question-file": getattr(args, "question_file", None)}


def expected_run_fields(args: argparse.Namespace, k: int | None) -> dict:
    """What this run will record in each answer's metadata, as far as the flags tell before loading.

    The dtype is left out for `--torch-dtype auto` (it depends on the device): `run_vqa` checks the
    resolved value once the model is loaded.
    """
    from llava.mm_utils import get_model_name_from_path
    from llava.pruning import parse_method_args

    fields = {
        "model_id": get_model_name_from_path(os.path.expanduser(args.model_path)),
        "visual_token_num": k,
        "visual_token_ratio": getattr(args, "visual_token_ratio", None),
        "pruning_method": args.pruning_method,
        "pruning_args": parse_method_args(args.pruning_args, args.pruning_method),
        "conv_mode": args.conv_mode,
        "anyres_mode": args.anyres_mode,  # compared only with records of anyres models (they carry it)
    }
    if DTYPE_NAMES.get(args.torch_dtype):
        fields["dtype"] = DTYPE_NAMES[args.torch_dtype]
    return fields


def _answer_shard(args, items: Sequence[VQAItem], files: dict, extra_metadata: dict | None, device: str) -> int:
    """Answer `items` into `files` ({K: path}); the model is loaded only when something is left to answer.

    Resuming into a file written by a different run is refused before any file is opened.
    """
    resume = not args.no_resume
    if resume:
        for k, path in files.items():
            if os.path.isfile(path) and os.path.getsize(path):
                check_resume(path, expected_run_fields(args, k))
    left = 0
    for path in files.values():  # read only: a refusal after loading must leave the files as they were
        done = answered_ids(path, skip_partial_tail=True) if resume else set()
        left = max(left, sum(item.key not in done for item in items))
    if not left:
        for path in files.values():  # repairs a killed run's last line, and creates empty shard files
            AnswerWriter(path, resume=resume).close()
        print(f"nothing left to answer in {', '.join(map(str, files.values()))}", file=sys.stderr)
        return 0
    tokenizer, model, image_processor, model_name = load_model_from_args(args, device)
    _, builder = resolve_conv_mode(args)
    gen = GenerationArgs(args.temperature, args.top_p, args.num_beams, args.max_new_tokens)
    answers = files if len(files) > 1 else next(iter(files.values()))
    return run_vqa(
        model, tokenizer, image_processor, items, answers, args.conv_mode, gen, model_name,
        image_folder=args.image_folder, batch_size=args.batch_size, num_workers=args.num_workers,
        resume=resume, metadata={**run_metadata(model, args), **(extra_metadata or {})},
        joint_sweep=getattr(args, "joint_sweep", False), truncate_prompts=getattr(args, "truncate_prompts", False),
        share_prefix=not getattr(args, "no_share_prefix", False),
        vision_cache_size=getattr(args, "vision_cache_size", 64), inputs_builder=builder,
    )
