"""One split of a Hugging Face dataset, offline, as `datasets` itself resolves it.

`--dataset` may be
- a local folder written by `save_to_disk` (read with `datasets.load_from_disk`);
- a local folder of parquet / arrow files in the hub repo layout (read with `datasets.load_dataset(folder)`,
  which infers splits and, from a README, configs);
- a hub id. Its locally cached repo snapshot (`huggingface_hub.snapshot_download(local_files_only=True)`)
  is read as such a folder; otherwise `datasets.load_dataset(id, name=config, cache_dir=...)` runs in
  offline mode, and `datasets` finds the dataset that an earlier online `load_dataset` prepared in its
  cache (its `packaged_modules.cache` builder). Nothing is ever downloaded.

Images stay encoded (`{"bytes", "path"}` dicts), so converters copy the original bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

# --split names tried in order (the lmms-lab datasets name their validation splits differently).
SPLIT_ALIASES = {
    "validation": ("validation", "val", "dev"),
    "val": ("val", "validation", "dev"),
    "dev": ("dev", "val", "validation"),
    "testdev": ("testdev", "test-dev", "test_dev"),
}


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


def _source(ds: Any, label: str) -> RowSource:
    """A RowSource over a Dataset (row count known) or an IterableDataset (count from its info, if any)."""
    if hasattr(ds, "__len__"):
        return RowSource(label, _undecoded(ds), len(ds), list(ds.column_names))
    split = ds.info.splits.get(str(ds.split)) if ds.info.splits and ds.split is not None else None
    columns = list(ds.features) if ds.features else []
    return RowSource(label, _undecoded(ds), split.num_examples if split else None, columns)


def _pick_split(splits: Any, split: str, label: str, where: str) -> RowSource:
    """The split of a (Iterable)DatasetDict, trying SPLIT_ALIASES; the error lists the splits there are."""
    for name in SPLIT_ALIASES.get(split, (split,)):
        if name in splits:
            return _source(splits[name], f"{label} [{name}]")
    raise ValueError(f"{label}: split {split!r} not in {where} (splits: {sorted(splits)}); use --split")


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _open_local(root: Path, split: str, config: str | None, label: str) -> RowSource:
    """A split from a local folder: `<root>/<config>` if that folder exists, else `root` (config from its README)."""
    import datasets

    sub = root / (config or "default")
    base = sub if sub.is_dir() else root
    if _is_saved_dataset(base):
        obj = datasets.load_from_disk(str(base))
        if isinstance(obj, datasets.DatasetDict):
            return _pick_split(obj, split, label, str(base))
        return _source(obj, label)
    # A README's `configs:` names the configs of a repo snapshot; a bare folder has only its own files.
    name = config if base == root and config and (root / "README.md").is_file() else None
    try:
        # streaming: large image datasets are read in place, never copied into the datasets cache
        splits = datasets.load_dataset(str(base), name=name, streaming=True)
    except (datasets.exceptions.DataFilesNotFoundError, FileNotFoundError) as err:
        raise FileNotFoundError(
            f"{label}: {base} holds no save_to_disk dataset and no data files datasets can read ({err}); "
            "pass the dataset folder (or the repo snapshot) as --dataset"
        ) from None
    return _pick_split(splits, split, label if str(base) == label else f"{label} [{base}]", str(base))


def _hub_snapshot(repo_id: str) -> Path | None:
    """The locally cached snapshot of a hub dataset repo, or None (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=repo_id, repo_type="dataset", local_files_only=True))
    except Exception:  # not cached, or huggingface_hub missing: both mean "not available here"
        return None


def _open_cached(repo_id: str, split: str, config: str | None, cache_dir: str | None) -> RowSource:
    """`datasets.load_dataset(repo_id)` in offline mode: the copy an earlier online run left in the cache."""
    import datasets

    if not datasets.config.HF_HUB_OFFLINE:
        raise RuntimeError(
            f"dataset {repo_id}: datasets is not in offline mode, so load_dataset could download; "
            "run with HF_DATASETS_OFFLINE=1 (python -m llava.eval.prepare_hf sets it before importing datasets)"
        )
    cache = cache_dir or str(datasets.config.HF_DATASETS_CACHE)
    try:
        splits = datasets.load_dataset(repo_id, name=config, cache_dir=cache_dir)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        try:
            from huggingface_hub import constants as hub_constants

            hub_cache = hub_constants.HF_HUB_CACHE
        except ImportError:  # pragma: no cover
            hub_cache = "~/.cache/huggingface/hub"
        raise DatasetNotAvailable(
            f"dataset {repo_id} (config {config or 'default'}, split {split}) is not available offline: it is not a "
            f"local folder, the hub cache ({hub_cache}) has no snapshot of it, and datasets finds no prepared copy "
            f"in {cache} ({type(err).__name__}: {str(err).splitlines()[0]}). On a machine with internet access run "
            f"`huggingface-cli download {repo_id} --repo-type dataset --local-dir DIR` (or "
            f"`datasets.load_dataset('{repo_id}', ...).save_to_disk(DIR)`), copy DIR here and pass --dataset DIR"
        ) from None
    return _pick_split(splits, split, repo_id, f"the datasets cache {cache}")


def open_split(dataset: str, split: str, config: str | None = None, cache_dir: str | None = None) -> RowSource:
    """Open one split of `dataset` (a local folder, or a hub id found in the local caches only)."""
    path = Path(dataset).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"--dataset {dataset}: expected a folder, got a file")
        return _open_local(path, split, config, dataset)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", dataset):
        snapshot = _hub_snapshot(dataset)
        if snapshot is not None:
            return _open_local(snapshot, split, config, dataset)
        return _open_cached(dataset, split, config, cache_dir)
    raise FileNotFoundError(f"--dataset {dataset}: no such folder, and not a hub id of the form owner/name")
