"""Checks that a checkpoint folder is readable and that its weights fill the model it is loaded into.

- `check_files(folder)`: every JSON file parses and every safetensors file is complete, before anything
  is loaded, so a damaged file is reported by name instead of by the library's parser.
- `load_weights(cls, folder, ...)`: `from_pretrained` with both checks, used for every layout.
- `check_loading_info(...)`: transformers' `output_loading_info=True` report (missing, unexpected and
  mismatched keys) turned into one error naming the folder, unless missing weights are allowed
  explicitly. Keys a layout legitimately lacks are passed in as `ignore` patterns by the loader.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path
from typing import Iterable

logger = logging.getLogger(__name__)

# Buffers that checkpoints may or may not hold (recomputed at init, never learned).
BUFFER_KEYS = (r"(^|\.)position_ids$", r"(^|\.)rotary_emb\.inv_freq$")
SHOWN = 3  # names listed per kind in an error


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be loaded as it is (damaged file, or weights that do not fit)."""


def check_files(folder: str | Path) -> None:
    """Raise CheckpointError naming the first JSON file that does not parse or safetensors file that is cut short."""
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{path}: not valid JSON ({err}); restore this file from the original checkpoint") from None
    for path in sorted(folder.glob("*.safetensors")):
        check_safetensors(path)


def check_safetensors(path: str | Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then the tensor bytes it indexes."""
    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header); re-download it")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, its header alone needs "
                                  f"{8 + length}); re-download it")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: damaged safetensors file (its header is not JSON); re-download it") from None
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        raise CheckpointError(f"{path}: truncated safetensors file ({size} of {needed} bytes); re-download it")


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:SHOWN])
    return shown + (f", ... ({len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def weight_mismatch_message(folder: str | Path, missing: Iterable[str], unexpected: Iterable[str] = (),
                            mismatched: Iterable[tuple] = (), what: str = "the model") -> str | None:
    """One line describing missing / unexpected / wrongly shaped weights, or None when there are none."""
    missing, unexpected, mismatched = sorted(missing), sorted(unexpected), sorted(mismatched)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if mismatched:
        shapes = [f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in mismatched]
        parts.append(f"{len(mismatched)} with another shape ({_names(shapes)})")
    if not parts:
        return None
    return (f"{folder}: the checkpoint's weights do not fit {what}: {'; '.join(parts)}. Check that the folder "
            f"holds the complete checkpoint (and --model-base for a projector-only one), or pass "
            f"allow_missing_weights=True (--allow-missing-weights) to run with those weights randomly initialised")


def check_loading_info(folder: str | Path, info: dict, allow_missing_weights: bool = False,
                       ignore: Iterable[str] = (), what: str = "the model") -> None:
    """Raise CheckpointError for keys transformers could not load, except those matching `ignore` regexes."""
    patterns = re.compile("|".join(f"(?:{p})" for p in (*BUFFER_KEYS, *ignore)))
    missing = [k for k in info.get("missing_keys", ()) if not patterns.search(k)]
    unexpected = [k for k in info.get("unexpected_keys", ()) if not patterns.search(k)]
    mismatched = list(info.get("mismatched_keys", ()))
    message = weight_mismatch_message(folder, missing, unexpected, mismatched, what)
    if message is None:
        return
    if not allow_missing_weights:
        raise CheckpointError(message)
    logger.warning("%s (continuing: allow_missing_weights)", message)


def load_with_info(cls, model_path: str, **kwargs):
    """`cls.from_pretrained(model_path, ...)` with its files checked first; returns (model, loading info).

    A file that cannot be read is a CheckpointError naming the folder.
    """
    import pickle

    check_files(model_path)
    try:
        return cls.from_pretrained(model_path, output_loading_info=True, **kwargs)
    except (OSError, EOFError, pickle.UnpicklingError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{model_path}: cannot load the checkpoint's weights ({type(err).__name__}: {first})") from err


def load_weights(cls, model_path: str, allow_missing_weights: bool = False, ignore: tuple[str, ...] = (),
                 what: str = "the LLaVA model", **kwargs):
    """`load_with_info`, then its loading report checked. `ignore`: regexes of keys this layout lacks or leaves unused.

    transformers' own weight report is silenced for the load: the check below reports what matters
    (missing or unexpected weights outside `ignore`) in one line naming the folder.
    """
    from llava import compat

    with compat.own_load_report():
        model, info = load_with_info(cls, model_path, **kwargs)
    check_loading_info(model_path, info, allow_missing_weights, ignore, what)
    return model
