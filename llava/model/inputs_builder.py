"""Per-family "inputs builders": prompts and model inputs for checkpoints that bring their own processor.

LLaVA-1.5/NeXT prompts are built by the runner from `--conv-mode` and CLIP pixels. A family whose
checkpoint ships an HF processor (LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL) registers a `ProcessorInputs`
under its family name (`llava.model.families`), and the eval drivers then:

1. build each question's prompt (`prompt`): without a conv mode, the checkpoint's own chat template,
   one user turn with the image(s) first and then the question text; with a conv mode, LLaVA's
   template text with the family's image placeholder where LLaVA puts `<image>`;
2. encode a batch (`encode`): the processor on the prompts and images, left-padded;
3. turn the processor's outputs into `model.generate` keywords (`generate_kwargs`): `input_ids` ->
   `inputs`, the pixels -> `images`, and every other output (image_sizes, image_grid_thw, ...)
   forwarded under its own name, except the ones the family lists in `ignore`.

A family plugs in with one call in its module:

    register_inputs_builder("qwen2.5-vl", ProcessorInputs(image_placeholder="<|vision_start|><|image_pad|><|vision_end|>"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

_BUILDERS: dict[str, "ProcessorInputs"] = {}


@dataclass(frozen=True)
class ProcessorInputs:
    """How one processor family's prompts and generate inputs are made.

    image_placeholder: the text standing for one image in a `--conv-mode` prompt (None: the
        processor's `image_token`, which it expands to the image's tokens).
    pixels_key: the processor output that `model.generate` takes as `images`.
    ignore: processor outputs that `model.generate` must not receive (bookkeeping such as
        OneVision's `batch_num_images`).
    """

    image_placeholder: str | None = None
    pixels_key: str = "pixel_values"
    ignore: tuple[str, ...] = ()

    def prompt(self, processor, question: str, num_images: int, conv_mode: str | None = None) -> str:
        """The prompt text of one question with `num_images` images (they come before the question)."""
        if conv_mode is None:
            content = [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": question}]
            if getattr(processor, "chat_template", None) is None:
                raise ValueError(f"{type(processor).__name__} has no chat template; pass --conv-mode to build "
                                 "LLaVA-style prompts instead")
            return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
        from llava.conversation import conv_templates

        if conv_mode not in conv_templates:
            raise ValueError(f"unknown --conv-mode {conv_mode!r}; available: {', '.join(sorted(conv_templates))}")
        placeholder = self.image_placeholder or processor.image_token
        text = "".join(placeholder + "\n" for _ in range(num_images)) + question
        conv = conv_templates[conv_mode].copy()
        conv.append_message(conv.roles[0], text)
        conv.append_message(conv.roles[1], None)
        return conv.get_prompt()

    def encode(self, processor, prompts: Sequence[str], images: Sequence[Sequence[Any]]) -> dict:
        """The processor's outputs for a batch: prompts [B] and each prompt's PIL images, left-padded."""
        flat = [im for group in images for im in group]
        return dict(processor(text=list(prompts), images=flat or None, return_tensors="pt", padding=True,
                              padding_side="left"))

    def generate_kwargs(self, encoded: dict, device=None, dtype=None) -> dict:
        """`model.generate` keywords from `encode`'s outputs (tensors moved to `device`, pixels cast to `dtype`)."""
        import torch

        out = {}
        for key, value in encoded.items():
            if key in self.ignore:
                continue
            name = {"input_ids": "inputs", self.pixels_key: "images"}.get(key, key)
            if torch.is_tensor(value) and device is not None:
                value = value.to(device=device, dtype=dtype) if name == "images" and value.is_floating_point() \
                    else value.to(device)
            out[name] = value
        return out


def register_inputs_builder(family: str, builder: ProcessorInputs) -> ProcessorInputs:
    """Register `builder` for the family registered as `family` in `llava.model.families`."""
    if family in _BUILDERS:
        raise ValueError(f"an inputs builder for model family {family!r} is registered twice")
    _BUILDERS[family] = builder
    return builder


def get_inputs_builder(family: str) -> ProcessorInputs | None:
    """The family's builder, or None for families whose prompts are LLaVA's (`--conv-mode`, CLIP pixels)."""
    from .families import _ensure_builtin

    _ensure_builtin()
    return _BUILDERS.get(family)


def list_inputs_builders() -> list[str]:
    from .families import _ensure_builtin

    _ensure_builtin()
    return sorted(_BUILDERS)
