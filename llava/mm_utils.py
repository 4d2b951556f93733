"""Prompt and image preprocessing helpers with LLaVA's semantics.

* :func:`tokenizer_image_token` turns a prompt with ``<image>`` markers into ids with
  ``IMAGE_TOKEN_INDEX`` placeholders, exactly as LLaVA does.
* :func:`process_images` applies the checkpoint's ``image_aspect_ratio`` ('pad' or none).
* :func:`load_image` (from :mod:`llava.image_io`) decodes an image file to the RGB picture it shows.
* :func:`load_image_processor` loads a CLIP ``preprocessor_config.json`` into transformers 5's
  PIL-backed CLIP image processor (the default class needs torchvision).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from transformers import StoppingCriteria

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.image_io import ImageDecodeError, decode_image, load_image, to_rgb

# ---- images ---------------------------------------------------------------------------------------


def load_image_from_base64(image: str) -> Image.Image:
    """Decode a base64-encoded image (as the LLaVA web demo sends them)."""
    return Image.open(io.BytesIO(base64.b64decode(image)))


def expand2square(pil_img: Image.Image, background_color: Any) -> Image.Image:
    """Pad the shorter side with `background_color` to a square, keeping the image centred."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    result = Image.new(pil_img.mode, (side, side), background_color)
    result.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return result


def load_image_processor(path: str | os.PathLike) -> Any:
    """Load a CLIP ``preprocessor_config.json`` (folder, or hub id in the local cache) into the PIL CLIP processor.

    transformers 5's ``CLIPImageProcessor`` is torchvision-backed; ``CLIPImageProcessorPil`` gives the
    same pixel values as 4.37's ``CLIPImageProcessor`` with PIL and NumPy only.
    """
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = Path(path)
    if not folder.is_dir():
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(repo_id=str(path), local_files_only=True, allow_patterns=["*.json"]))
        except Exception as err:
            raise FileNotFoundError(
                f"image processor {str(path)!r} is neither a local folder nor a hub repo in the local cache; "
                f"pass a folder with preprocessor_config.json, or download it first (huggingface-cli download {path})"
            ) from err
    if not (folder / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"no preprocessor_config.json in {str(folder)!r}; pass the vision tower's folder")
    return CLIPImageProcessorPil.from_pretrained(str(folder))


def _process_padded(images: Sequence[Image.Image], image_processor: Any, model_cfg: Any) -> torch.Tensor | list:
    background = tuple(int(x * 255) for x in image_processor.image_mean)
    out = [
        image_processor.preprocess(expand2square(image, background), return_tensors="pt")["pixel_values"][0]
        for image in images
    ]
    if out and all(x.shape == out[0].shape for x in out):
        return torch.stack(out, dim=0)
    return out


def _process_anyres(
    images: Sequence[Image.Image], image_processor: Any, model_cfg: Any, anyres_mode: str = "faithful"
) -> torch.Tensor | list:
    """LLaVA-NeXT: per image a [1 + crops, 3, S, S] stack (base view first, then the grid row by row)."""
    from llava.anyres import anyres_pinpoints, anyres_views

    crop = image_processor.crop_size["height"]
    base = image_processor.size["shortest_edge"]
    pinpoints = anyres_pinpoints(model_cfg, crop, anyres_mode)
    out = [
        torch.stack([
            image_processor.preprocess(view, return_tensors="pt")["pixel_values"][0]
            for view in anyres_views(image, pinpoints, crop, base)
        ])
        for image in images
    ]
    if out and all(x.shape == out[0].shape for x in out):
        return torch.stack(out, dim=0)
    return out


def _process_plain(images: Sequence[Image.Image], image_processor: Any, model_cfg: Any) -> torch.Tensor:
    return image_processor(images, return_tensors="pt")["pixel_values"]


# image_aspect_ratio -> handler(images, image_processor, model_cfg); any other value uses _process_plain.
ASPECT_RATIO_HANDLERS: dict[str, Callable[..., Any]] = {
    "pad": _process_padded,
    "anyres": _process_anyres,
}


def process_images(
    images: Sequence[Image.Image], image_processor: Any, model_cfg: Any, anyres_mode: str = "faithful"
) -> torch.Tensor | list:
    """Pixel values for `images` under ``model_cfg.image_aspect_ratio``.

    'pad': each image is padded to a square with the processor's mean colour, then processed; the
    result is stacked into one tensor when all shapes agree. 'anyres': LLaVA-NeXT views, on the
    checkpoint's grids or, with `anyres_mode='paper'` (a PruningConfig's), FasterVLM's fixed 2x2 grid.
    Anything else (None, 'square' ...): the processor alone (resize shortest side, centre crop).
    """
    aspect = getattr(model_cfg, "image_aspect_ratio", None)
    if aspect == "anyres":
        return _process_anyres(images, image_processor, model_cfg, anyres_mode)
    handler = ASPECT_RATIO_HANDLERS.get(aspect, _process_plain) if isinstance(aspect, str) else _process_plain
    return handler(images, image_processor, model_cfg)


# ---- text -----------------------------------------------------------------------------------------


def tokenizer_image_token(
    prompt: str,
    tokenizer: Any,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    return_tensors: str | None = None,
) -> list[int] | torch.Tensor:
    """Ids of `prompt` with each ``<image>`` replaced by one `image_token_index`.

    Each text chunk is tokenized on its own. When the first chunk starts with BOS, the ids start
    with that one BOS and the first id of every chunk (its BOS) is dropped.
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(DEFAULT_IMAGE_TOKEN)]
    skip = 1 if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    input_ids: list[int] = chunks[0][:skip]
    for i, chunk in enumerate(chunks):
        if i:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[skip:])
    if return_tensors is None:
        return input_ids
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    raise ValueError(f"unsupported return_tensors={return_tensors!r}; use None or 'pt'")


def get_model_name_from_path(model_path: str) -> str:
    """Last path component; ``.../run/checkpoint-500`` becomes ``run_checkpoint-500``."""
    parts = model_path.strip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stop generation once every row of the batch ends with (or has just produced) one of `keywords`.

    `input_ids` are the ids generation starts from; their length marks where new tokens begin. A row
    no longer than that holds only generated tokens (generation from ``inputs_embeds``). Returns a
    per-row bool tensor that is all True once every row has hit a keyword, else all False.
    """

    def __init__(self, keywords: Sequence[str], tokenizer: Any, input_ids: torch.Tensor) -> None:
        self.keywords = list(keywords)
        self.tokenizer = tokenizer
        self.start_len = input_ids.shape[1]
        self.keyword_ids: list[torch.Tensor] = []
        for keyword in self.keywords:
            ids = tokenizer(keyword).input_ids
            if len(ids) > 1 and ids[0] == tokenizer.bos_token_id:
                ids = ids[1:]
            self.keyword_ids.append(torch.tensor(ids, dtype=torch.long))
        self.max_keyword_len = max((len(ids) for ids in self.keyword_ids), default=0)

    def _row_hit(self, row: torch.Tensor) -> bool:
        for ids in self.keyword_ids:
            n = ids.shape[0]
            if 0 < n <= row.shape[0] and torch.equal(row[-n:], ids.to(row.device)):
                return True
        generated = row.shape[0] - self.start_len if row.shape[0] > self.start_len else row.shape[0]
        window = min(generated, self.max_keyword_len)
        if window <= 0:
            return False
        text = self.tokenizer.decode(row[-window:].tolist(), skip_special_tokens=True)
        return any(keyword in text for keyword in self.keywords)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None = None, **kwargs: Any) -> torch.BoolTensor:
        done = all(self._row_hit(row) for row in input_ids)
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


__all__ = [
    "ASPECT_RATIO_HANDLERS",
    "ImageDecodeError",
    "KeywordsStoppingCriteria",
    "decode_image",
    "expand2square",
    "get_model_name_from_path",
    "load_image",
    "load_image_from_base64",
    "load_image_processor",
    "process_images",
    "to_rgb",
    "tokenizer_image_token",
]
