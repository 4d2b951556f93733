"""What every converter shares: the prompt texts, image bytes and files, and the conversion context."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from llava.eval.catalogue.hf_data import RowSource, open_split

SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER_EN = "Answer with the option's letter from the given choices directly."
LETTERS = "ABCDEFGHIJ"

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


def plain(value: Any) -> Any:
    """A JSON-safe copy of a dataset value (numpy scalars, nested lists/dicts)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def has_ext(name: str) -> bool:
    return bool(re.search(r"\.(jpe?g|png|gif|bmp|webp|tiff?)$", name, re.IGNORECASE))


def is_none(value: Any) -> bool:
    """LLaVA's MMBench rule: None, NaN and the strings 'nan'/'none' mean "no value"."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and value.strip().lower() in ("nan", "none")


# ----------------------------------------------------------------------------- context


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
    cache_dir: str | None = None
    skip_missing: bool = False  # video-QA: leave out questions whose video is missing instead of failing
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    stores: list[ImageStore] = field(default_factory=list)

    def open(self, config: str | None = None, split: str | None = None, dataset: str | None = None) -> RowSource:
        """One split of the benchmark's dataset (or of `dataset`), resolved offline."""
        return open_split(dataset or self.dataset, split or self.split, config if config is not None else self.config,
                          cache_dir=self.cache_dir)

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
