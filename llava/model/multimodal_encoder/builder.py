"""Locate and load the vision tower named by a checkpoint's `mm_vision_tower`."""

from __future__ import annotations

import os
from pathlib import Path

from .clip_encoder import CLIPVisionTower


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
CLIP_TEXT_KEYS = (r"^text_model\.", r"^text_projection\.", r"^visual_projection\.", r"^logit_scale$")


def build_vision_tower(
    name_or_path: str,
    select_layer: int = -2,
    select_feature: str = "patch",
    base_dir: str | None = None,
    allow_missing_weights: bool = False,
    **load_kwargs,
) -> CLIPVisionTower:
    """Load the CLIP tower (weights + image processor) for `mm_vision_tower`.

    Weights the tower needs but the folder lacks are a CheckpointError naming the folder, unless
    `allow_missing_weights`; the text half of a full CLIP checkpoint is ignored.
    """
    from transformers import CLIPVisionModel

    from llava.mm_utils import load_image_processor
    from llava.model.checkpoint_checks import load_weights

    path = resolve_pretrained_dir(name_or_path, base_dir)
    if not (Path(path) / "config.json").exists():
        raise ValueError(f"vision tower {name_or_path!r} ({path}) has no config.json")
    clip = load_weights(CLIPVisionModel, path, allow_missing_weights, ignore=CLIP_TEXT_KEYS,
                        what="the CLIP vision tower", **load_kwargs)
    return CLIPVisionTower(clip, select_layer, select_feature, load_image_processor(path), name=str(path))
