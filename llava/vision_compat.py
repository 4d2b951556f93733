"""Processors of the newer vision-language families without torchvision (image-only), or with it (stock).

In transformers 5.24 the processor classes of LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL and Qwen3-VL
take a video processor, and every video processor needs torchvision. `video_processor=None` is
refused (`ProcessorMixin` type-checks each part, and without torchvision it cannot even look the
video class up), so these processors cannot be built on a CPU install without torchvision.

The way through, with public mechanisms only: `ProcessorMixin` reads a processor's parts from the
signature of its `__init__` (the documented way custom processors declare them). `image_only(cls)`
is a subclass of the family's own processor whose `__init__` signature lacks `video_processor`, so
it is built from the PIL image processor (`*ImageProcessorPil`, no torchvision) and the tokenizer,
and everything else (placeholder expansion, chat template, batching) is the family's own code.
It saves under the family's own `processor_class`, so a folder it writes is what the stock class
reads. A call with videos raises `VideoNeedsTorchvisionError` instead of silently dropping them.

`load_processor(folder)` is the one entry point: the stock `AutoProcessor` when torchvision imports,
the image-only processor otherwise (a tokenizer without a pad token pads with its eos token).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import transformers

# processor_class -> the PIL image processor its image processor falls back to (no torchvision).
PIL_IMAGE_PROCESSORS = {
    "LlavaOnevisionProcessor": "LlavaOnevisionImageProcessorPil",
    "Qwen2VLProcessor": "Qwen2VLImageProcessorPil",
    "Qwen2_5_VLProcessor": "Qwen2VLImageProcessorPil",
    "Qwen3VLProcessor": "Qwen2VLImageProcessorPil",
}
# config.json model_type -> processor_class, for folders whose processor files do not name it (the
# image processor and tokenizer saved on their own, as older checkpoints and hand-made folders are).
MODEL_TYPE_PROCESSORS = {
    "llava_onevision": "LlavaOnevisionProcessor",
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen2_5_vl": "Qwen2_5_VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
}
_PARTS = ("image_processor", "tokenizer", "video_processor")
INSTALL_HINT = ("install a torchvision build that matches your torch (CPU: pip install torchvision "
                "--index-url https://download.pytorch.org/whl/cpu)")


class VideoNeedsTorchvisionError(ImportError):
    """A video was given to a processor built without torchvision."""


def torchvision_error() -> str | None:
    """Why torchvision cannot be used here (one line), or None when it imports.

    A CUDA wheel next to CPU torch is installed but fails on import (`operator torchvision::nms does
    not exist`), so presence is tested by importing, not by finding the package.
    """
    try:
        import torchvision  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any failure means the video path is unavailable
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
    return None


def image_only(parent: type) -> type:
    """The family processor `parent` without its video part: built from (image_processor, tokenizer, ...).

    Its other constructor arguments, its `__call__` for images and text and its saved
    `processor_config.json` are the parent's own.
    """
    sig = inspect.signature(parent.__init__)
    names = list(sig.parameters)
    if names[1:4] != list(_PARTS):
        raise ValueError(f"{parent.__name__}: expected parts (image_processor, tokenizer, video_processor), "
                         f"got {names[1:4]}; this processor has no image-only form")
    params = [p for n, p in sig.parameters.items() if n != "video_processor"]

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        parent.__init__(self, image_processor=image_processor, tokenizer=tokenizer, video_processor=None, **kwargs)

    __init__.__signature__ = sig.replace(parameters=params)  # what ProcessorMixin reads its parts from

    def __call__(self, images=None, text=None, videos=None, **kwargs):
        if videos is not None:
            raise VideoNeedsTorchvisionError(
                f"{parent.__name__}: videos need torchvision, which is not usable here "
                f"({torchvision_error() or 'the processor was built without it'}); {INSTALL_HINT}")
        return parent.__call__(self, images=images, text=text, **kwargs)

    def to_dict(self) -> dict:
        out = parent.to_dict(self)
        out["processor_class"] = parent.__name__  # the folder stays the family's own layout
        return out

    doc = f"{parent.__name__} built from its PIL image processor and tokenizer, without a video processor."
    return type(f"{parent.__name__}WithoutVideo", (parent,),
                {"__init__": __init__, "__call__": __call__, "to_dict": to_dict, "__doc__": doc,
                 "__module__": __name__})


def _processor_config(folder: Path) -> dict:
    for name in ("processor_config.json", "preprocessor_config.json"):
        path = folder / name
        if path.is_file():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError as err:
                raise ValueError(f"{path}: not valid JSON ({err}); restore it from the original checkpoint") \
                    from None
    raise FileNotFoundError(f"{folder}: no processor_config.json or preprocessor_config.json (not a processor folder); "
                            "copy the processor files from the released checkpoint")


def _model_processor_class(folder: Path) -> str | None:
    """The processor class of the folder's model (config.json model_type), when no processor file names it."""
    path = folder / "config.json"
    try:
        model_type = json.loads(path.read_text(encoding="utf-8")).get("model_type") if path.is_file() else None
    except ValueError:
        return None
    return MODEL_TYPE_PROCESSORS.get(model_type)


def _chat_template(folder: Path) -> str | None:
    """The processor's chat template: chat_template.jinja, or the older chat_template.json."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if (folder / "chat_template.json").is_file():
        try:
            return json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
        except ValueError as err:
            raise ValueError(f"{folder / 'chat_template.json'}: not valid JSON ({err})") from None
    return None


def load_processor(folder: str | Path, torchvision: bool | None = None):
    """The processor of a checkpoint folder: stock with torchvision, image-only without it.

    torchvision: None detects it (`torchvision_error()`); False forces the image-only form.
    """
    folder = Path(folder)
    raw = _processor_config(folder)
    cls_name = raw.get("processor_class") or _model_processor_class(folder)
    if cls_name is None:
        raise ValueError(f"{folder}: its processor files name no processor_class and its config.json model_type "
                         f"is none of {', '.join(MODEL_TYPE_PROCESSORS)}; add \"processor_class\" to "
                         "processor_config.json")
    if cls_name not in PIL_IMAGE_PROCESSORS:
        raise ValueError(f"{folder}: processor_class {cls_name!r} has no image-only form "
                         f"(known: {', '.join(PIL_IMAGE_PROCESSORS)})")
    if torchvision is None:
        torchvision = torchvision_error() is None
    if torchvision:
        from transformers import AutoProcessor

        return _pads(AutoProcessor.from_pretrained(str(folder)))
    from llava.model.tokenizer import load_tokenizer

    parent = getattr(transformers, cls_name)
    image_processor = getattr(transformers, PIL_IMAGE_PROCESSORS[cls_name]).from_pretrained(str(folder))
    tokenizer = load_tokenizer(folder)
    accepted = set(inspect.signature(parent.__init__).parameters) - set(_PARTS) - {"self", "kwargs"}
    kwargs = {k: v for k, v in raw.items() if k in accepted}
    if "chat_template" not in kwargs:
        kwargs["chat_template"] = _chat_template(folder) or getattr(tokenizer, "chat_template", None)
    return _pads(image_only(parent)(image_processor=image_processor, tokenizer=tokenizer, **kwargs))


def _pads(processor):
    """A tokenizer without a pad token pads batches with its eos token (the padded positions are masked
    out; transformers' generate falls back to eos the same way), so batches of prompts can be encoded."""
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return processor
