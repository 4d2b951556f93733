"""What both attention analyses share: flags, reading LLaVA instruction data, the measuring loop, output files.

A sample is the FIRST human turn of a LLaVA instruction record (`{id, image, conversations}`),
put in the conversation template and tokenised with its `<image>` placeholder, plus its image
processed as the checkpoint expects. Records without an image, or whose image is missing or
unreadable, are skipped with a warning naming the id, and counted.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

from .attention import PrefillAttention, run_prefill

logger = logging.getLogger("llava.analysis")

DEFAULT_DATA_FILE = "playground/data/analysis/llava_v1_5_mix1k.jsonl"
REPO = Path(__file__).resolve().parents[2]


def missing_data_file_message(path: str) -> str:
    """Where the 1K analysis file comes from: FasterVLM's repository, or the reference data when it is here."""
    name = Path(DEFAULT_DATA_FILE).name
    message = (f"--data-file {path} not found. The 1K analysis subset {name} (1,000 LLaVA-1.5 instruction records) "
               f"is in FasterVLM's repository (github.com/Theia-4869/FasterVLM, {DEFAULT_DATA_FILE}); put it at "
               f"{DEFAULT_DATA_FILE} or pass --data-file, with its images (coco, gqa, ocr_vqa, textvqa, vg) "
               f"under --image-folder")
    reference = Path(os.environ.get("FASTERVLM_REFERENCE", REPO.parent / "shared" / "reference"))
    copy = reference / "analysis" / name
    if copy.is_file():
        message += f". A copy is in the reference data: --data-file {copy}"
    return message


def add_common_args(parser: argparse.ArgumentParser, default_output: str) -> None:
    """Flags of both analyses (model, data, device) and the --replot mode.

    --output-dir defaults to `default_output`, or with --replot to the stats file's folder.
    """
    parser.add_argument("--model-path", type=str, default=None, help="LLaVA checkpoint folder or cached id")
    parser.add_argument("--vision-tower", type=str, default=None, help="local CLIP folder overriding mm_vision_tower")
    parser.add_argument("--data-file", type=str, default=DEFAULT_DATA_FILE,
                        help="LLaVA instruction jsonl: {id, image, conversations}")
    parser.add_argument("--image-folder", type=str, default="", help="folder the records' image paths are relative to")
    parser.add_argument("--num-samples", type=int, default=-1, help="use the first N records (default: all)")
    parser.add_argument("--output-dir", type=str, default=None, help=f"default: {default_output}")
    parser.set_defaults(default_output=default_output)
    parser.add_argument("--conv-mode", type=str, default="vicuna_v1")
    parser.add_argument("--device", type=str, default="auto")
    parser.add_argument("--torch-dtype", type=str, default="auto", help="float32 | float16 | bfloat16 | auto")
    parser.add_argument("--batch-size", type=int, default=1, help="samples per prefill (left-padded)")
    parser.add_argument("--query-chunk", type=int, default=64, help="query rows per attention chunk (memory bound)")
    parser.add_argument("--replot", type=str, default=None, metavar="STATS.json",
                        help="redraw the plots from a stats file written earlier, without running the model")


def check_run_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in the output folder and reject unusable flag combinations early."""
    if args.output_dir is None:
        args.output_dir = str(Path(args.replot).parent) if args.replot else args.default_output
    if args.replot:
        if not os.path.isfile(args.replot):
            parser.error(f"--replot {args.replot} not found")
        return
    if not args.model_path:
        parser.error("--model-path is required (unless --replot STATS.json)")
    if args.batch_size < 1 or args.query_chunk < 1:
        parser.error("--batch-size and --query-chunk must be >= 1")
    if not os.path.isfile(args.data_file):
        parser.error(missing_data_file_message(args.data_file))


# ---- data ------------------------------------------------------------------------------------------


def read_records(path: str, num_samples: int = -1) -> list[dict]:
    """The first `num_samples` records (all when < 0) of a .jsonl or .json list file."""
    text = Path(path).read_text()
    if path.endswith(".json"):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    return records if num_samples is None or num_samples < 0 else records[:num_samples]


def first_human_turn(record: dict) -> str:
    """The text of the first 'human' message, with an `<image>` placeholder (prepended when absent, as LLaVA does)."""
    for turn in record.get("conversations", []):
        if turn.get("from") == "human":
            text = turn["value"]
            if DEFAULT_IMAGE_TOKEN not in text:
                text = DEFAULT_IMAGE_TOKEN + "\n" + text
            return text
    raise ValueError(f"sample {record.get('id')}: no human turn in its conversations")


def build_prompt(text: str, conv_mode: str, mm_use_im_start_end: bool = False) -> str:
    """The first turn in the conversation template, ready for the assistant's answer."""
    from llava.conversation import conv_templates

    if conv_mode not in conv_templates:
        raise ValueError(f"unknown --conv-mode {conv_mode!r}; available: {', '.join(sorted(conv_templates))}")
    if mm_use_im_start_end:
        text = text.replace(DEFAULT_IMAGE_TOKEN, DEFAULT_IM_START_TOKEN + DEFAULT_IMAGE_TOKEN + DEFAULT_IM_END_TOKEN)
    conv = conv_templates[conv_mode].copy()
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


@dataclass
class Batch:
    ids: list[str]
    input_ids: torch.Tensor  # [B, L] right-padded
    attention_mask: torch.Tensor  # [B, L]
    images: torch.Tensor | list  # [B, 3, S, S]; a family with a processor: B x [P_i, 3, S, S] views
    image_sizes: list | None = None  # a family with a processor: (height, width) per image


def uses_processor(processor) -> bool:
    """Whether the checkpoint came with a full processor (OneVision, Qwen): its chat template builds prompts."""
    return hasattr(processor, "apply_chat_template") and hasattr(processor, "image_processor")


def processor_sample(processor, text: str, image) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(input_ids [L], views [P, 3, S, S], (height, width)) of one turn built with the checkpoint's chat template.

    The turn is the image, then the question without its `<image>` placeholder (the template's order).
    """
    question = text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(turn, add_generation_prompt=True)
    out = processor(images=[image], text=[prompt], return_tensors="pt")
    return out["input_ids"][0], out["pixel_values"][0], [int(v) for v in out["image_sizes"][0]]


@dataclass
class RunLog:
    """How many records were read, measured and skipped (with the reasons)."""

    num_records: int = 0
    num_measured: int = 0
    skipped: list[dict] = field(default_factory=list)

    def skip(self, sample_id, reason: str) -> None:
        logger.warning("sample %s skipped: %s", sample_id, reason)
        self.skipped.append({"id": sample_id, "reason": reason})

    def as_dict(self) -> dict:
        return {"num_records": self.num_records, "num_samples": self.num_measured,
                "num_skipped": len(self.skipped), "skipped": self.skipped}


def iter_batches(records: Sequence[dict], tokenizer, image_processor, model_config, conv_mode: str,
                 image_folder: str, batch_size: int, log: RunLog, progress=None) -> Iterator[Batch]:
    """Tokenised prompts and processed images, `batch_size` usable samples at a time."""
    from llava.mm_utils import load_image, process_images, tokenizer_image_token

    use_start_end = getattr(model_config, "mm_use_im_start_end", False)
    pending: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for record in records:
        log.num_records += 1
        if progress is not None:
            progress.update(1)
        sample_id = record.get("id", f"#{log.num_records - 1}")
        image_file = record.get("image")
        if not image_file:
            log.skip(sample_id, "the record has no image")
            continue
        path = os.path.join(image_folder, image_file)
        try:
            image = load_image(path)
        except FileNotFoundError:
            log.skip(sample_id, f"image file {path} not found (check --image-folder)")
            continue
        except (OSError, ValueError) as err:
            log.skip(sample_id, f"image file {path} unreadable: {err}")
            continue
        text = first_human_turn(record)
        if text.count(DEFAULT_IMAGE_TOKEN) != 1:
            log.skip(sample_id, f"its first turn holds {text.count(DEFAULT_IMAGE_TOKEN)} <image> placeholders, not 1")
            continue
        if uses_processor(image_processor):
            ids, pixels, size = processor_sample(image_processor, text, image)
            pending.append((sample_id, ids, pixels, size))
        else:
            prompt = build_prompt(text, conv_mode, use_start_end)
            ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
            pixels = process_images([image], image_processor, model_config)
            pixels = pixels[0] if torch.is_tensor(pixels) else pixels[0].squeeze(0)
            # LLaVA-NeXT: [V, 3, S, S] views (base first), and the image's (width, height)
            anyres = getattr(model_config, "image_aspect_ratio", None) == "anyres"
            pending.append((sample_id, ids, pixels, list(image.size) if anyres else None))
        if len(pending) == batch_size:
            yield _collate(pending, tokenizer)
            pending = []
    if pending:
        yield _collate(pending, tokenizer)


def _collate(items: list[tuple[str, torch.Tensor, torch.Tensor, list | None]], tokenizer) -> Batch:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(ids.shape[0] for _, ids, _, _ in items)
    input_ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (_, ids, _, _) in enumerate(items):
        input_ids[row, : ids.shape[0]] = ids
        mask[row, : ids.shape[0]] = 1
    ids = [i for i, _, _, _ in items]
    if items[0][3] is not None:  # views differ in number per image: a list
        return Batch(ids, input_ids, mask, [p for _, _, p, _ in items], [s for _, _, _, s in items])
    return Batch(ids, input_ids, mask, torch.stack([p for _, _, p, _ in items]))


# ---- the measuring loop ------------------------------------------------------------------------------


def load_model(args: argparse.Namespace):
    """(tokenizer, model, image_processor) for the analysis: unpruned (K = 576), eval mode."""
    from llava.mm_utils import get_model_name_from_path
    from llava.model.builder import load_pretrained_model

    from llava.pruning import PruningConfig

    tokenizer, model, processor, _ = load_pretrained_model(
        args.model_path, None, get_model_name_from_path(args.model_path), device=args.device,
        torch_dtype=args.torch_dtype, vision_tower_path=args.vision_tower, pruning=PruningConfig())
    return tokenizer, model.eval(), processor


def measure(model, tokenizer, image_processor, records: Sequence[dict], args: argparse.Namespace,
            layers: Iterable[int], columns: bool, consume: Callable[[str, PrefillAttention], None],
            desc: str = "prefill") -> RunLog:
    """Run the prefill over `records` and hand each measured sample to `consume(sample_id, result)`."""
    from tqdm import tqdm

    log = RunLog()
    device = model.get_model().embed_tokens.weight.device
    dtype = model.get_vision_tower().dtype
    layers = list(layers)
    with tqdm(total=len(records), desc=desc, unit="sample") as progress:
        for batch in iter_batches(records, tokenizer, image_processor, model.config, args.conv_mode,
                                  args.image_folder, args.batch_size, log, progress):
            images = ([v.to(device=device, dtype=dtype) for v in batch.images] if isinstance(batch.images, list)
                      else batch.images.to(device=device, dtype=dtype))
            results = run_prefill(model, batch.input_ids.to(device), images, batch.attention_mask.to(device), layers,
                                  columns, args.query_chunk, image_sizes=batch.image_sizes)
            for sample_id, result in zip(batch.ids, results):
                consume(sample_id, result)
                log.num_measured += 1
    if log.skipped:
        logger.warning("%d of %d samples skipped (missing or unusable images); see 'skipped' in the stats file",
                       len(log.skipped), log.num_records)
    return log


# ---- outputs ---------------------------------------------------------------------------------------


def reference_label(model) -> str:
    """What the analyses' `cls_attn` holds: CLIP's [CLS] row, or the stand-in of a tower without [CLS]."""
    stand_in = getattr(model.get_vision_tower(), "cls_stand_in", None)
    if stand_in is not None:
        return f"[CLS] stand-in {stand_in} (base view)"
    return "CLIP [CLS] (base view)" if model.is_anyres() else "CLIP [CLS]"


def run_meta(args: argparse.Namespace, model) -> dict:
    return {"model_path": args.model_path, "data_file": args.data_file, "image_folder": args.image_folder,
            "conv_mode": args.conv_mode, "torch_dtype": str(model.dtype).replace("torch.", ""),
            "num_llm_layers": model.config.num_hidden_layers,
            "vision_select_layer": model.config.mm_vision_select_layer,
            "reference_signal": reference_label(model),
            "prompt": "chat template" if model.family_inputs is not None else f"conv template {args.conv_mode}",
            "measured_tokens": "the base view (first tokens of each image block)" if model.family_inputs is not None
            or model.is_anyres() else "the whole image"}


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def read_stats(path: str, analysis: str) -> dict:
    stats = json.loads(Path(path).read_text())
    if stats.get("analysis") != analysis:
        raise ValueError(f"{path} holds {stats.get('analysis')!r} statistics, not {analysis!r}")
    return stats


def pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
