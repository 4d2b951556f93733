"""Build LLaVA-format evaluation files from the lmms-lab Hugging Face datasets, offline.

    python -m llava.eval.prepare_hf --benchmark pope --dataset /data/hf/POPE --out-dir playground/data/eval/pope

`--dataset` is a local folder (written by `datasets.save_to_disk`, or parquet / arrow files in the hub
repo layout, e.g. `data/test-00000-of-00003.parquet` or `<config>/<split>-*.parquet`) or a hub id such as
`lmms-lab/POPE`, which is looked up only in the local caches (the hub snapshot cache, then the `datasets`
cache); nothing is downloaded. Images are copied as the dataset's original encoded bytes (never
re-encoded), under LLaVA's file names, and an identical existing file is left alone, so a run can be
repeated or resumed. Each run also writes `prepare_hf_info.json` (source, counts, files, notes).

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
import base64
import csv
import hashlib
import io
import json
import os
import re
import sys
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from .io_utils import read_json, write_json, write_jsonl

SHORT_ANSWER = "Answer the question using a single word or phrase."
VIZWIZ_UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."
OPTION_LETTER_EN = "Answer with the option's letter from the given choices directly."
OPTION_LETTER_CN = "请直接回答选项字母。"
MME_SUFFIX = " Please answer yes or no."
OCR_PREFIX = "Reference OCR token: "
LETTERS = "ABCDEFGHIJ"
INFO_FILE = "prepare_hf_info.json"

# LLaVA's POPE question ids: category offset + 1-based position within the category.
POPE_OFFSETS = {"adversarial": 0, "random": 10_000_000, "popular": 20_000_000}
# SEED-Bench (v1) question_type names, as in SEED-Bench.json.
SEED_QUESTION_TYPES = {
    "Scene Understanding": 1, "Instance Identity": 2, "Instance Attributes": 3, "Instance Location": 4,
    "Instances Counting": 5, "Spatial Relation": 6, "Instance Interaction": 7, "Visual Reasoning": 8,
    "Text Understanding": 9, "Action Recognition": 10, "Action Prediction": 11, "Procedure Understanding": 12,
}
SPLIT_ALIASES = {
    "validation": ("validation", "val", "dev"),
    "val": ("val", "validation", "dev"),
    "dev": ("dev", "val", "validation"),
    "testdev": ("testdev", "test-dev", "test_dev"),
}
DATA_SUFFIXES = (".parquet", ".arrow")


# ----------------------------------------------------------------------------- dataset access


class DatasetNotAvailable(FileNotFoundError):
    """The dataset is neither a local folder nor in a local Hugging Face cache."""


@dataclass
class RowSource:
    """Rows of one split, with images left encoded (`{"bytes", "path"}` dicts)."""

    label: str
    rows: Iterable[dict]
    num_rows: int | None
    columns: list[str]

    def require(self, columns: Sequence[str], benchmark: str) -> None:
        """Raise naming the missing columns when the split is not in the expected layout."""
        missing = [c for c in columns if c not in self.columns]
        if missing:
            raise ValueError(
                f"{self.label}: missing column(s) {missing} (found {self.columns}); "
                f"is this the lmms-lab {benchmark} layout? Check --dataset/--config/--split"
            )


def _undecoded(ds: Any) -> Any:
    """An iterable over `ds` whose image columns stay encoded (no PIL decode / re-encode)."""
    it = ds.to_iterable_dataset() if hasattr(ds, "to_iterable_dataset") else ds
    return it.decode(False) if hasattr(it, "decode") else it


def _from_dataset(ds: Any, label: str) -> RowSource:
    return RowSource(label, _undecoded(ds), len(ds), list(ds.column_names))


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _split_names(path: Path) -> set[str]:
    """Split names a data file may hold, from its name or folder (hub, parquet-export and cache layouts)."""
    stem = path.name.split(".")[0]
    names = {stem.split("-")[0], path.parent.name}
    if path.suffix == ".arrow":  # datasets cache: <builder>-<split>[-NNNNN-of-NNNNN].arrow
        match = re.search(r"-([^-]+?)(?:-\d{5}-of-\d{5})?$", stem)
        if match:
            names.add(match.group(1))
    return names


def _open_files(base: Path, split: str, label: str) -> RowSource:
    """The split's parquet/arrow files under `base` (one folder), as a RowSource."""
    import datasets

    files = sorted(p for p in base.rglob("*") if p.suffix in DATA_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(
            f"{label}: {base} holds no save_to_disk dataset and no .parquet/.arrow files; "
            "pass the dataset folder (or the repo snapshot) as --dataset"
        )
    chosen: list[Path] = []
    for name in SPLIT_ALIASES.get(split, (split,)):
        chosen = [p for p in files if name in _split_names(p)]
        if chosen:
            break
    if not chosen:
        available = sorted({n for p in files for n in _split_names(p)} - {base.name})
        raise ValueError(f"{label}: no files for split {split!r} under {base}; names seen: {available} (use --split)")
    folders = sorted({p.parent for p in chosen})
    if len(folders) > 1:
        if all(p.suffix == ".arrow" for p in chosen):  # several cached versions: take the newest
            newest = max(folders, key=lambda d: d.stat().st_mtime)
            chosen = [p for p in chosen if p.parent == newest]
        else:
            raise ValueError(
                f"{label}: split {split!r} found in several folders {[str(f) for f in folders]}; "
                "pass --config (the sub-folder / config name) to pick one"
            )
    label = f"{label} [{split}: {chosen[0].parent}]"
    if chosen[0].suffix == ".arrow":
        ds = datasets.concatenate_datasets([datasets.Dataset.from_file(str(p)) for p in chosen])
        return _from_dataset(ds, label)
    import pyarrow.parquet as pq

    stream = datasets.load_dataset("parquet", data_files=[str(p) for p in chosen], split="train", streaming=True)
    num_rows = sum(pq.ParquetFile(p).metadata.num_rows for p in chosen)
    columns = list(stream.features) if stream.features else pq.read_schema(chosen[0]).names
    return RowSource(label, _undecoded(stream), num_rows, columns)


def _open_local(root: Path, split: str, config: str | None, label: str) -> RowSource:
    """A split from a local folder: `<root>/<config>` if that exists, else `root`."""
    import datasets

    sub = root / (config or "default")
    base = sub if sub.is_dir() else root
    if _is_saved_dataset(base):
        obj = datasets.load_from_disk(str(base))
        if isinstance(obj, datasets.DatasetDict):
            for name in SPLIT_ALIASES.get(split, (split,)):
                if name in obj:
                    return _from_dataset(obj[name], f"{label} [{name}]")
            raise ValueError(f"{label}: split {split!r} not in {base} (splits: {sorted(obj)}); use --split")
        return _from_dataset(obj, label)
    return _open_files(base, split, label)


def _hub_snapshot(repo_id: str) -> Path | None:
    """The locally cached snapshot of a hub dataset repo, or None (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo_id, repo_type="dataset", local_files_only=True))
    except Exception:  # not cached, or huggingface_hub missing: both mean "not available here"
        return None


def _datasets_cache_dir(repo_id: str) -> Path | None:
    """The `datasets` cache folder of a hub dataset prepared earlier by `load_dataset`, or None."""
    import datasets

    try:
        from datasets.utils.py_utils import camelcase_to_snakecase
    except ImportError:  # pragma: no cover - older/newer datasets
        def camelcase_to_snakecase(name: str) -> str:
            return name.lower()

    cache = Path(datasets.config.HF_DATASETS_CACHE)
    owner, name = repo_id.split("/", 1)
    for cand in (f"{owner}___{camelcase_to_snakecase(name)}", f"{owner}___{name}"):
        if (cache / cand).is_dir():
            return cache / cand
    wanted = f"{owner}___{name}".lower().replace("-", "_")
    if cache.is_dir():
        for entry in cache.iterdir():
            if entry.is_dir() and entry.name.lower().replace("-", "_") == wanted:
                return entry
    return None


def open_split(dataset: str, split: str, config: str | None = None) -> RowSource:
    """Open one split of `dataset` (a local folder, or a hub id found in the local caches only)."""
    path = Path(dataset).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--dataset {dataset}: expected a folder, got a file")
        return _open_local(path, split, config, dataset)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", dataset):
        errors: list[Exception] = []
        for root in (_hub_snapshot(dataset), _datasets_cache_dir(dataset)):
            if root is not None:
                try:
                    return _open_local(root, split, config, dataset)
                except (FileNotFoundError, ValueError) as err:  # e.g. a partial snapshot: try the next cache
                    errors.append(err)
        if errors:
            raise errors[0]
        import datasets

        try:
            from huggingface_hub import constants as hub_constants

            hub_cache = hub_constants.HF_HUB_CACHE
        except ImportError:  # pragma: no cover
            hub_cache = "~/.cache/huggingface/hub"
        raise DatasetNotAvailable(
            f"dataset {dataset} (config {config or 'default'}, split {split}) is not available offline: it is not a "
            f"local folder, and neither the hub cache ({hub_cache}) nor the datasets cache "
            f"({datasets.config.HF_DATASETS_CACHE}) holds it. On a machine with internet access run "
            f"`huggingface-cli download {dataset} --repo-type dataset --local-dir DIR` (or "
            f"`datasets.load_dataset('{dataset}', ...).save_to_disk(DIR)`), copy DIR here and pass --dataset DIR"
        )
    raise FileNotFoundError(f"--dataset {dataset}: no such folder, and not a hub id of the form owner/name")


# ----------------------------------------------------------------------------- images and files


_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def sniff_ext(data: bytes) -> str:
    """File extension for encoded image bytes (".jpg", ".png", ...), from the magic number."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return ".png"


def image_bytes(value: Any, item: str, name: str = "") -> bytes:
    """Encoded bytes of a dataset image value (`{"bytes", "path"}`, raw bytes or a PIL image)."""
    if value is None:
        raise ValueError(f"{item}: the row has no image")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        path = value.get("path")
        if path and Path(path).is_file():
            return Path(path).read_bytes()
        raise ValueError(f"{item}: image has neither bytes nor a readable path ({path!r})")
    if hasattr(value, "save"):  # a decoded PIL image (only when decoding could not be switched off)
        fmt = "JPEG" if name.lower().endswith((".jpg", ".jpeg")) else "PNG"
        buf = io.BytesIO()
        (value.convert("RGB") if fmt == "JPEG" else value).save(buf, format=fmt, quality=95)
        return buf.getvalue()
    raise ValueError(f"{item}: unsupported image value of type {type(value).__name__}")


class ImageStore:
    """Writes images under `root`, skipping files that already hold identical bytes (resume-friendly)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written = 0
        self.unchanged = 0
        self.conflicts: list[str] = []
        self._seen: dict[str, str] = {}

    def save(self, rel: str, data: bytes, item: str) -> str:
        """Store `data` at `root/rel` and return `rel`; a name reused for other bytes keeps the first."""
        parts = Path(rel).parts
        if not rel or Path(rel).is_absolute() or ".." in parts:
            raise ValueError(f"{item}: unsafe image file name {rel!r}")
        digest = hashlib.sha1(data).hexdigest()
        if rel in self._seen:
            if self._seen[rel] != digest:
                self.conflicts.append(f"{item}: {rel}")
            return rel
        self._seen[rel] = digest
        dest = self.root / rel
        if dest.is_file() and dest.stat().st_size == len(data) and dest.read_bytes() == data:
            self.unchanged += 1
            return rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
        self.written += 1
        return rel


def write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]], quoting: bool = True) -> None:
    """A tab-separated file with a header line.

    quoting=True: fields holding tabs, newlines or quotes are CSV-quoted (what pandas and the MMBench
    readers expect). quoting=False: plain tab-joined lines (the MME ground truth is read with a plain
    split), so a field with a tab or newline is an error.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        if not quoting:
            for n, row in enumerate([header, *rows]):
                fields = ["" if v is None else str(v) for v in row]
                if any("\t" in v or "\n" in v or "\r" in v for v in fields):
                    raise ValueError(f"{path}: row {n} has a tab or newline inside a field: {fields}")
                f.write("\t".join(fields) + "\n")
            return
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])


def _plain(value: Any) -> Any:
    """A JSON-safe copy of a dataset value (numpy scalars, nested lists/dicts)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _has_ext(name: str) -> bool:
    return bool(re.search(r"\.(jpe?g|png|gif|bmp|webp|tiff?)$", name, re.IGNORECASE))


def _is_none(value: Any) -> bool:
    """LLaVA's MMBench rule: None, NaN and the strings 'nan'/'none' mean "no value"."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and value.strip().lower() in ("nan", "none")


# ----------------------------------------------------------------------------- registry and context


@dataclass
class Context:
    """What a converter needs: the options, the output folder, an image store, and bookkeeping."""

    benchmark: str
    dataset: str
    split: str
    config: str | None
    out_dir: Path
    limit: int | None = None
    images_dataset: str | None = None
    images_config: str | None = None
    reference_questions: str | None = None
    progress: bool = True
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    stores: list[ImageStore] = field(default_factory=list)

    def open(self, config: str | None = None, split: str | None = None, dataset: str | None = None) -> RowSource:
        return open_split(dataset or self.dataset, split or self.split, config if config is not None else self.config)

    def rows(self, source: RowSource, desc: str, limit: bool = True) -> Iterator[dict]:
        """Iterate a source with a progress bar (and --limit for the main question rows)."""
        from tqdm import tqdm

        total = source.num_rows
        rows: Iterable[dict] = source.rows
        if limit and self.limit is not None:
            rows = islice(rows, self.limit)
            total = min(total, self.limit) if total is not None else self.limit
        yield from tqdm(rows, total=total, desc=f"{self.benchmark}: {desc}", unit="row", disable=not self.progress)

    def images(self, sub: str) -> ImageStore:
        store = ImageStore(self.out_dir / sub)
        self.stores.append(store)
        self.files.setdefault("image_folder", str(self.out_dir / sub))
        return store

    def out(self, kind: str, rel: str) -> Path:
        path = self.out_dir / rel
        self.files[kind] = str(path)
        return path

    def note(self, message: str) -> None:
        self.notes.append(message)


@dataclass(frozen=True)
class Converter:
    """A registered benchmark converter and its lmms-lab defaults."""

    name: str
    func: Callable[[Context], None]
    hub_id: str
    split: str
    config: str | None
    folder: str


CONVERTERS: dict[str, Converter] = {}
ALIASES = {"sqa": "scienceqa", "scienceqa_img": "scienceqa", "seed_bench": "seed", "seedbench": "seed",
           "mm-vet": "mmvet", "llava-bench-in-the-wild": "llavabench", "llava_bench": "llavabench",
           "mmbench_en": "mmbench", "vizwiz_vqa": "vizwiz", "vqa_v2": "vqav2"}


def register_converter(name: str, *, hub_id: str, split: str, folder: str, config: str | None = None):
    """Register `func(ctx)` as the converter for benchmark `name` (with its lmms-lab defaults)."""

    def wrap(func: Callable[[Context], None]) -> Callable[[Context], None]:
        if name in CONVERTERS:
            raise ValueError(f"converter {name!r} registered twice")
        CONVERTERS[name] = Converter(name, func, hub_id, split, config, folder)
        return func

    return wrap


def list_converters() -> list[str]:
    return sorted(CONVERTERS)


def get_converter(name: str) -> Converter:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CONVERTERS:
        raise ValueError(f"unknown benchmark {name!r}; choose from {', '.join(list_converters())}")
    return CONVERTERS[key]


# ----------------------------------------------------------------------------- converters


@register_converter("pope", hub_id="lmms-lab/POPE", split="test", folder="pope")
def convert_pope(ctx: Context) -> None:
    """POPE: question file, COCO images and one label file per category, in question order."""
    src = ctx.open()
    src.require(["question", "answer", "image"], "POPE")
    store = ctx.images("val2014")
    questions: list[dict] = []
    labels: dict[str, list[dict]] = {}
    offsets = dict(POPE_OFFSETS)
    for n, row in enumerate(ctx.rows(src, "questions")):
        category = str(row.get("category") or ctx.split)  # lmms-lab "Full" config: one split per category
        item = f"POPE row {n} (question_id {row.get('question_id')})"
        label = str(row["answer"]).strip().lower()
        if label not in ("yes", "no"):
            raise ValueError(f"{item}: answer {row['answer']!r} is not yes/no")
        data = image_bytes(row["image"], item)
        source = str(row.get("image_source") or row.get("id") or f"pope_{n}")
        name = source if _has_ext(source) else source + ".jpg"
        store.save(name, data, item)
        if category not in offsets:
            offsets[category] = 10_000_000 * (max(offsets.values()) // 10_000_000 + 1)
        position = len(labels.setdefault(category, [])) + 1
        labels[category].append({"question_id": position, "image": name, "text": row["question"], "label": label})
        questions.append({"question_id": offsets[category] + position, "image": name,
                          "text": f"{row['question']}\n{SHORT_ANSWER}", "category": category})
    write_jsonl(ctx.out("question_file", "llava_pope_test.jsonl"), questions)
    for category, rows in labels.items():
        write_jsonl(ctx.out(f"labels_{category}", f"labels/coco_pope_{category}.json"), rows)
    ctx.files["annotation_dir"] = str(ctx.out_dir / "labels")
    ctx.counts.update({"questions": len(questions), **{f"questions_{c}": len(r) for c, r in labels.items()}})
    if len(labels.get("random", [])) == 3000:
        ctx.note("POPE random has 3,000 questions here; LLaVA-1.5's file has 2,910 (POPE commit e3e39262)")


@register_converter("mme", hub_id="lmms-lab/MME", split="test", folder="MME")
def convert_mme(ctx: Context) -> None:
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


@register_converter("textvqa", hub_id="lmms-lab/textvqa", split="validation", folder="textvqa")
def convert_textvqa(ctx: Context) -> None:
    """TextVQA val: question file with OCR tokens, images, and the TextVQA_0.5.1_val.json annotation."""
    src = ctx.open()
    src.require(["image_id", "question", "image"], "TextVQA")
    has_ocr = "ocr_tokens" in src.columns
    if not has_ocr:
        ctx.note("no ocr_tokens column: prompts have no 'Reference OCR token' line (LLaVA's file has one)")
    else:
        ctx.note("OCR tokens come from the dataset's ocr_tokens column "
                 "(that they equal LLaVA's Rosetta tokens is not verified)")
    store = ctx.images("train_images")
    questions, annotations = [], []
    for n, row in enumerate(ctx.rows(src, "questions")):
        image_id = str(row["image_id"])
        item = f"TextVQA question {n} (image {image_id})"
        name = store.save(f"{image_id}.jpg", image_bytes(row["image"], item), item)
        text = str(row["question"]).capitalize()
        if has_ocr:
            text += "\n" + OCR_PREFIX + ", ".join(row["ocr_tokens"] or [])
        questions.append({"question_id": image_id, "image": name, "text": f"{text}\n{SHORT_ANSWER}",
                          "category": "default"})
        annotations.append({k: _plain(v) for k, v in row.items() if k not in ("image", "ocr_tokens")})
    name = "llava_textvqa_val_v051_ocr.jsonl" if has_ocr else "llava_textvqa_val_v051_noocr.jsonl"
    write_jsonl(ctx.out("question_file", name), questions)
    if any(a.get("answers") for a in annotations):
        header = {"dataset_type": {"validation": "val"}.get(ctx.split, ctx.split), "dataset_name": "textvqa",
                  "dataset_version": "0.5.1"}
        write_json(ctx.out("annotation_file", "TextVQA_0.5.1_val.json"), {**header, "data": annotations}, indent=None)
    else:
        ctx.note(f"split {ctx.split} has no answers: no annotation file written")
    ctx.counts["questions"] = len(questions)


@register_converter("gqa", hub_id="lmms-lab/GQA", split="testdev", folder="gqa")
def convert_gqa(ctx: Context) -> None:
    """GQA balanced: question file, the images it needs (images config), and the questions json."""
    qsrc = ctx.open(config=ctx.config or f"{ctx.split}_balanced_instructions")
    qsrc.require(["id", "imageId", "question"], "GQA (instructions config)")
    questions, gt, needed = [], {}, {}
    for row in ctx.rows(qsrc, "questions"):
        qid, image_id = str(row["id"]), str(row["imageId"])
        needed.setdefault(image_id, qid)
        questions.append({"question_id": qid, "image": f"{image_id}.jpg", "text": f"{row['question']}\n{SHORT_ANSWER}",
                          "category": "default"})
        gt[qid] = {k: _plain(v) for k, v in row.items() if k not in ("id", "image")}
    isrc = ctx.open(config=ctx.images_config or f"{ctx.split}_balanced_images", dataset=ctx.images_dataset)
    isrc.require(["id", "image"], "GQA (images config)")
    store = ctx.images("data/images")
    found = set()
    for row in ctx.rows(isrc, "images", limit=False):
        image_id = str(row["id"])
        if image_id in needed and image_id not in found:
            store.save(f"{image_id}.jpg", image_bytes(row["image"], f"GQA image {image_id}"), f"GQA image {image_id}")
            found.add(image_id)
    missing = [i for i in needed if i not in found]
    if missing:
        raise ValueError(f"GQA: {len(missing)} image(s) not in {isrc.label}, e.g. image {missing[0]} "
                         f"(question {needed[missing[0]]}); check --images-config / --images-dataset")
    stem = f"llava_gqa_{ctx.split}_balanced"
    write_jsonl(ctx.out("question_file", f"{stem}.jsonl"), questions)
    write_json(ctx.out("questions_json", f"data/{ctx.split}_balanced_questions.json"), gt, indent=None)
    ctx.counts.update({"questions": len(questions), "images": len(found)})


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


@register_converter("scienceqa", hub_id="lmms-lab/ScienceQA", split="test", config="ScienceQA-IMG", folder="scienceqa")
def convert_scienceqa(ctx: Context) -> None:
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
        problem = {k: _plain(row[k]) for k in ("question", "choices", "answer", "hint", "task", "grade", "subject",
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
            if _is_none(row.get(letter)):
                break
            options.append(f"{letter}. {row[letter]}")
        text = ("" if _is_none(row.get("hint")) else f"{row['hint']}\n") + str(row["question"])
        text += "".join("\n" + o for o in options) + "\n" + suffix
        name = store.save(f"{index % 1_000_000}{sniff_ext(data)}", data, item)
        questions.append({"question_id": index, "image": name, "text": text, "category": row.get("category")})
    write_tsv(ctx.out("annotation_file", f"{stem}.tsv"), header, rows)
    write_jsonl(ctx.out("question_file", f"llava_{stem}.jsonl"), questions)
    if "answer" not in header or not any(r[header.index("answer")] for r in rows):
        ctx.note(f"split {ctx.split}: no gold answers in the data (submit to the MMBench server)")
    ctx.counts.update({"rows": len(rows), "questions": len({q['question_id'] % 1_000_000 for q in questions})})


@register_converter("mmbench", hub_id="lmms-lab/MMBench", split="dev", config="en", folder="mmbench")
def convert_mmbench(ctx: Context) -> None:
    """MMBench English (see `_convert_mmbench`)."""
    _convert_mmbench(ctx, "en")


@register_converter("mmbench_cn", hub_id="lmms-lab/MMBench", split="dev", config="cn", folder="mmbench_cn")
def convert_mmbench_cn(ctx: Context) -> None:
    """MMBench Chinese (see `_convert_mmbench`)."""
    _convert_mmbench(ctx, "cn")


@register_converter("seed", hub_id="lmms-lab/SEED-Bench", split="test", folder="seed_bench")
def convert_seed(ctx: Context) -> None:
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
            name = f"SEED-Bench-image/{data_id if _has_ext(data_id) else qid + sniff_ext(data)}"
        else:
            name = f"SEED-Bench-video-image/{type_id}_{qid}{sniff_ext(data)}"
        store.save(name, data, item)
        text = (f"{row['question']}\nA. {row['choice_a']}\nB. {row['choice_b']}\nC. {row['choice_c']}\n"
                f"D. {row['choice_d']}\n{OPTION_LETTER_EN}")
        questions.append({"question_id": int(qid) if qid.isdigit() else qid, "image": name, "text": text,
                          "category": type_names.get(type_id, str(type_id))})
        entry = {k: _plain(v) for k, v in row.items() if k != "image"}
        entry.update({"question_type_id": type_id, "data_type": data_type})
        annotation.append(entry)
    if skipped:
        ctx.note(f"{len(skipped)} SEED question(s) without any image/frame were left out, e.g. {skipped[:3]}")
    write_jsonl(ctx.out("question_file", "llava-seed-bench.jsonl"), questions)
    write_json(ctx.out("annotation_file", "SEED-Bench.json"),
               {"question_type": SEED_QUESTION_TYPES, "questions": annotation}, indent=None)
    ctx.counts.update({"questions": len(questions),
                       "video_questions": sum(a["data_type"] != "image" for a in annotation)})


@register_converter("mmvet", hub_id="lmms-lab/MMVet", split="test", folder="mm-vet")
def convert_mmvet(ctx: Context) -> None:
    """MM-Vet: llava-mm-vet.jsonl, images/, and the grader's mm-vet.json."""
    src = ctx.open()
    src.require(["question_id", "question", "answer", "image"], "MM-Vet")
    store = ctx.images("images")
    questions, gt = [], {}
    for n, row in enumerate(ctx.rows(src, "questions")):
        key = str(row["question_id"])
        match = re.fullmatch(r"v1_(\d+)", key)
        qid = int(match.group(1)) if match else n
        key = key if match else f"v1_{qid}"
        item = f"MM-Vet {key}"
        data = image_bytes(row["image"], item)
        source = os.path.basename(str(row.get("image_source") or ""))
        name = store.save(source if _has_ext(source) else key + sniff_ext(data), data, item)
        questions.append({"image": name, "text": row["question"], "category": "conv", "question_id": qid})
        caps = row.get("capability") or []
        caps = [c.strip() for c in caps.split(",")] if isinstance(caps, str) else list(caps)
        gt[key] = {"imagename": name, "capability": caps, "question": row["question"], "answer": row["answer"]}
    write_jsonl(ctx.out("question_file", "llava-mm-vet.jsonl"), questions)
    write_json(ctx.out("mmvet_json", "mm-vet.json"), gt, indent=2)
    ctx.counts["questions"] = len(questions)


@register_converter("llavabench", hub_id="lmms-lab/llava-bench-in-the-wild", split="train",
                    folder="llava-bench-in-the-wild")
def convert_llavabench(ctx: Context) -> None:
    """LLaVA-Bench (in-the-wild): questions.jsonl, images/, context.jsonl, answers_gpt4.jsonl."""
    src = ctx.open()
    src.require(["question_id", "question", "image", "category"], "LLaVA-Bench")
    store = ctx.images("images")
    by_digest: dict[str, str] = {}
    questions, context, answers = [], {}, []
    for n, row in enumerate(ctx.rows(src, "questions")):
        qid = _plain(row["question_id"])
        item = f"LLaVA-Bench question {qid}"
        data = image_bytes(row["image"], item)
        image_id = str(row.get("image_id") or "")
        if image_id:
            name = image_id if _has_ext(image_id) else image_id + sniff_ext(data)
        else:  # no image id: number images by first appearance, as LLaVA's 001.jpg, 002.jpg, ...
            digest = hashlib.sha1(data).hexdigest()
            name = by_digest.setdefault(digest, f"{len(by_digest) + 1:03d}{sniff_ext(data)}")
        store.save(name, data, item)
        questions.append({"question_id": qid, "image": name, "text": row["question"], "category": row["category"]})
        caption = row.get("caption") or ""
        caption = "\n".join(caption) if isinstance(caption, list) else str(caption)
        context.setdefault(name, {"id": name.rsplit(".", 1)[0], "image": name, "caption": caption})
        if row.get("gpt_answer") is not None:
            answers.append({"question_id": qid, "prompt": row["question"], "text": row["gpt_answer"],
                            "answer_id": None, "model_id": "gpt-4 (lmms-lab gpt_answer)", "metadata": {}})
    write_jsonl(ctx.out("question_file", "questions.jsonl"), questions)
    write_jsonl(ctx.out("context", "context.jsonl"), list(context.values()))
    if answers:
        write_jsonl(ctx.out("reference_answers", "answers_gpt4.jsonl"), answers)
    else:
        ctx.note("no gpt_answer column: answers_gpt4.jsonl not written (the GPT review needs it)")
    ctx.counts.update({"questions": len(questions), "images": len(context)})


@register_converter("vqav2", hub_id="lmms-lab/VQAv2", split="testdev", folder="vqav2")
def convert_vqav2(ctx: Context) -> None:
    """VQAv2: question file + COCO images; the val annotation file when the split has answers."""
    src = ctx.open()
    src.require(["question_id", "question", "image_id", "image"], "VQAv2")
    coco = "val2014" if ctx.split in ("validation", "val") else "test2015"
    stem = {"testdev": "test-dev2015", "test": "test2015"}.get(ctx.split, coco)
    store = ctx.images(coco)
    questions, annotations = [], []
    for row in ctx.rows(src, "questions"):
        qid, image_id = int(row["question_id"]), int(row["image_id"])
        item = f"VQAv2 question {qid}"
        name = store.save(f"COCO_{coco}_{image_id:012d}.jpg", image_bytes(row["image"], item), item)
        questions.append({"question_id": qid, "image": name, "text": f"{row['question']}\n{SHORT_ANSWER}",
                          "category": "default"})
        if row.get("answers"):
            annotations.append({k: _plain(row[k]) for k in ("question_id", "image_id", "question_type", "answer_type",
                                                             "multiple_choice_answer", "answers") if k in row})
    write_jsonl(ctx.out("question_file", f"llava_vqav2_mscoco_{stem}.jsonl"), questions)
    if annotations:
        write_json(ctx.out("annotation_file", f"v2_mscoco_{coco}_annotations.json"), {"annotations": annotations},
                   indent=None)
    else:
        ctx.note(f"split {ctx.split} has no answers: score it on the EvalAI server")
    ctx.counts["questions"] = len(questions)


@register_converter("vizwiz", hub_id="lmms-lab/VizWiz-VQA", split="test", folder="vizwiz")
def convert_vizwiz(ctx: Context) -> None:
    """VizWiz-VQA: question file (ids 0..N-1) + images; val.json when the split has answers."""
    src = ctx.open()
    src.require(["question_id", "question", "image"], "VizWiz-VQA")
    store = ctx.images(ctx.split)
    questions, annotations = [], []
    for n, row in enumerate(ctx.rows(src, "questions")):
        stem = str(row["question_id"])
        item = f"VizWiz question {n} ({stem})"
        name = store.save(stem if _has_ext(stem) else stem + ".jpg", image_bytes(row["image"], item), item)
        text = f"{str(row['question']).capitalize()}\n{VIZWIZ_UNANSWERABLE}\n{SHORT_ANSWER}"
        questions.append({"question_id": n, "image": name, "text": text, "category": "default"})
        answers = [a for a in (row.get("answers") or []) if a]
        if answers:
            annotations.append({"image": name, "question": row["question"],
                                "answers": [{"answer": a} if isinstance(a, str) else _plain(a) for a in answers],
                                "answer_type": row.get("category")})
    write_jsonl(ctx.out("question_file", f"llava_{ctx.split}.jsonl"), questions)
    if annotations:
        write_json(ctx.out("annotation_file", f"{ctx.split}.json"), annotations, indent=None)
        if len(annotations) != len(questions):
            ctx.note(f"{len(questions) - len(annotations)} question(s) have no answers and no annotation")
    else:
        ctx.note(f"split {ctx.split} has no answers: score it on the EvalAI server")
    ctx.counts["questions"] = len(questions)


# ----------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmark", required=True, help=f"one of: {', '.join(list_converters())}")
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
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    """Convert one benchmark; returns (and writes to <out-dir>/prepare_hf_info.json) a summary."""
    args = build_parser().parse_args(argv)
    conv = get_converter(args.benchmark)
    out_dir = Path(args.out_dir or Path("playground/data/eval") / conv.folder)
    ctx = Context(
        benchmark=conv.name, dataset=args.dataset or conv.hub_id, split=args.split or conv.split,
        config=args.config if args.config is not None else conv.config, out_dir=out_dir, limit=args.limit,
        images_dataset=args.images_dataset, images_config=args.images_config,
        reference_questions=args.reference_questions, progress=not args.no_progress,
    )
    conv.func(ctx)  # files and folders are created as they are written, so a failed open leaves nothing
    written = sum(s.written for s in ctx.stores)
    unchanged = sum(s.unchanged for s in ctx.stores)
    conflicts = [c for s in ctx.stores for c in s.conflicts]
    if conflicts:
        ctx.note(f"{len(conflicts)} row(s) named an image already written with different bytes; kept the first "
                 f"(e.g. {conflicts[0]})")
    info = {"benchmark": conv.name, "dataset": ctx.dataset, "config": ctx.config, "split": ctx.split,
            "limit": ctx.limit, "counts": ctx.counts, "images": {"written": written, "unchanged": unchanged},
            "files": ctx.files, "notes": ctx.notes}
    write_json(out_dir / INFO_FILE, info, indent=2)
    print(f"{conv.name}: {json.dumps(ctx.counts)}; images written {written}, unchanged {unchanged}")
    for kind, path in ctx.files.items():
        print(f"  {kind}: {path}")
    for message in ctx.notes:
        print(f"  note: {message}", file=sys.stderr)
    return info


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
