"""Locate and load the vision tower named by a checkpoint's `mm_vision_tower`."""

from __future__ import annotations

import os
from pathlib import Path

from .registry import vision_adapter_for_folder


def resolve_pretrained_dir(name_or_path: str, base_dir: str | None = None) -> str:
    """A local folder for `name_or_path`: an existing dir, a dir relative to `base_dir`, or a cached hub id.

    Never downloads: a hub id must already be in the local HF cache.
    """
    if os.path.isdir(name_or_path):
        return name_or_path
    if base_dir and not os.path.isabs(name_or_path) and os.path.isdir(os.path.join(base_dir, name_or_path)):
        return os.path.join(base_dir, name_or_path)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name_or_path, local_files_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not available offline"
        raise FileNotFoundError(
            f"{name_or_path!r} is neither a local folder nor a model in the local Hugging Face cache "
            f"({type(err).__name__}); download it beforehand or pass a local path"
        ) from err


# A full CLIPModel checkpoint (as openai/clip-vit-large-patch14-336 is published) also holds the text
# half; the vision tower legitimately leaves those weights unused.


def build_vision_tower(
    name_or_path: str,
    select_layer: int = -2,
    select_feature: str = "patch",
    base_dir: str | None = None,
    allow_missing_weights: bool = False,
    **load_kwargs,
):
    """Load the tower named by `mm_vision_tower` (weights + image processor) with its registered adapter."""
    path = resolve_pretrained_dir(name_or_path, base_dir)
    if not (Path(path) / "config.json").exists():
        raise ValueError(f"vision tower {name_or_path!r} ({path}) has no config.json")
    adapter = vision_adapter_for_folder(path)
    return adapter.from_pretrained(path, select_layer, select_feature, allow_missing_weights=allow_missing_weights,
                                   **load_kwargs)
