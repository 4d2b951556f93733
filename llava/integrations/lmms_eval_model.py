"""An lmms-eval model that answers with FasterVLM's pruned LLaVA (`--model fastervlm`).

    lmms-eval --model fastervlm --tasks mme \\
        --model_args pretrained=liuhaotian/llava-v1.5-7b,visual_token_num=58,pruning_method=fastervlm

It is registered through lmms-eval's `lmms_eval.models` entry-point group (see `manifests`), so
installing this package adds the model and changes nothing in lmms-eval. Each request's context is
the question; the model answers it exactly as `python -m llava.eval.model_vqa_loader` would (same
prompt, image preprocessing, batching by image, shared prefixes and vision cache), because it hands
the requests to the same runner. LLaVA-1.5/NeXT checkpoints get LLaVA's `vicuna_v1` conversation
template and CLIP pixels; checkpoints whose family brings a processor (an inputs builder in
`llava.model.inputs_builder`: LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL) get their own chat template and
processor, as the driver does without `--conv-mode`. An explicit `conv_mode=` wins for both. Each
answer reports the visual tokens that entered the LLM in the logged samples' `token_counts`.

`pruning_args` holds commas of its own: quote it (`pruning_args='layer=2,ratio=0.5'`) or write
`;` between its items (`pruning_args=layer=2;ratio=0.5`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from lmms_eval.api.instance import GenerationResult, TokenCounts
from lmms_eval.api.model import lmms
from PIL import Image

from llava.constants import DEFAULT_IMAGE_TOKEN

MODEL_ID = "fastervlm"
# Checkpoint families (llava.model.families) whose prompts and pixels our runner builds itself: LLaVA's
# conversation templates and CLIP preprocessing, LLaVA-1.5 and LLaVA-NeXT (anyres) in both layouts.
# The other families it answers are those with an inputs builder (`runner_families`).
LLAVA_FAMILIES = ("llava", "llava-hf")
LLAVA_CONV_MODE = "vicuna_v1"  # LLaVA-1.5's eval scripts' template, the default for LLAVA_FAMILIES


def runner_families() -> tuple[str, ...]:
    """Every family llava.eval.runner answers: LLaVA's own, then those registered with an inputs builder."""
    from llava.model.inputs_builder import list_inputs_builders

    return LLAVA_FAMILIES + tuple(f for f in list_inputs_builders() if f not in LLAVA_FAMILIES)


def manifests():
    """The entry point's payload: lmms-eval's manifest of the `fastervlm` model."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.FasterVLM")]


@dataclass
class VisualTokenCounts(TokenCounts):
    """lmms-eval's token counters plus the visual tokens that entered the LLM (summed over the images)."""

    visual_tokens: int | None = None
    visual_tokens_per_image: list[int] | None = None

    def to_dict(self) -> dict:
        out = super().to_dict()
        if self.visual_tokens is not None:
            out["visual_tokens"] = self.visual_tokens
            out["visual_tokens_per_image"] = self.visual_tokens_per_image
        return out


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def question_of(context: str) -> str:
    """The question text of an lmms-eval context: its image placeholders and their newline removed."""
    text = context.replace(DEFAULT_IMAGE_TOKEN + "\n", "").replace(DEFAULT_IMAGE_TOKEN, "")
    return text.strip("\n")


def check_family(pretrained: str) -> str:
    """The checkpoint's family, or a clear error when our runner cannot answer it yet."""
    from llava.eval.runner import model_family

    family = model_family(pretrained)
    families = runner_families()
    if family not in families:
        raise ValueError(f"--model_args pretrained={pretrained}: a {family!r} checkpoint; the {MODEL_ID} lmms-eval model "
                         f"answers through llava.eval.runner, which answers image questions for the "
                         f"{', '.join(families)} families only (a family joins by registering an inputs builder in "
                         f"llava.model.inputs_builder)")
    return family


def default_conv_mode(conv_mode: str | None, builder) -> str | None:
    """The run's conv mode: an explicit one wins; else None (the chat template) for processor families
    (`builder` not None) and LLaVA's vicuna_v1 for the others."""
    conv_mode = _unquote(conv_mode)
    if conv_mode not in (None, "", "None"):
        return str(conv_mode)
    return None if builder is not None else LLAVA_CONV_MODE


class FasterVLM(lmms):
    """lmms-eval model: LLaVA checkpoints (original or llava-hf layout, 1.5 and NeXT) and the processor
    families (LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL) with a pruning method."""

    def __init__(self, pretrained: str, model_base: str | None = None, visual_token_num: int | None = None,
                 pruning_method: str = "fastervlm", pruning_args: str | None = None, conv_mode: str | None = None,
                 batch_size: int | str = 1, device: str = "auto", dtype: str | None = None,
                 anyres_mode: str = "faithful", share_prefix: bool = True, vision_cache_size: int = 64,
                 max_new_tokens: int = 128, **kwargs) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"--model_args for {MODEL_ID}: unknown argument(s) {sorted(kwargs)}; known: pretrained, "
                             "model_base, visual_token_num, pruning_method, pruning_args, conv_mode, batch_size, "
                             "device, dtype, anyres_mode, share_prefix, vision_cache_size, max_new_tokens")
        from llava.cli_help import check_method_names
        from llava.mm_utils import get_model_name_from_path
        from llava.model.builder import load_pretrained_model
        from llava.model.inputs_builder import get_inputs_builder
        from llava.pruning import parse_method_args

        check_method_names(pruning_method, "pruning_method")
        pruning_args = _unquote(pruning_args)
        text = None if pruning_args in (None, "", "None") else str(pruning_args).replace(";", ",")
        pruning_args = parse_method_args(text, pruning_method)
        self.batch_size_per_gpu = int(batch_size)
        if self.batch_size_per_gpu < 1:
            raise ValueError(f"--model_args batch_size must be >= 1, got {batch_size}")
        self.max_new_tokens = int(max_new_tokens)
        self.share_prefix, self.vision_cache_size = bool(share_prefix), int(vision_cache_size)
        self.model_id = get_model_name_from_path(os.path.expanduser(str(pretrained)))
        self.family = check_family(os.path.expanduser(str(pretrained)))
        # a processor family's builder; its checkpoint's processor is then `image_processor`
        self.inputs_builder = get_inputs_builder(self.family)
        self.conv_mode = default_conv_mode(conv_mode, self.inputs_builder)
        self.tokenizer, self.model, self.image_processor, _ = load_pretrained_model(
            os.path.expanduser(str(pretrained)), model_base, self.model_id, device=device, torch_dtype=dtype,
            visual_token_num=None if visual_token_num in (None, "", "None") else int(visual_token_num),
            pruning_method=pruning_method, pruning_args=pruning_args, anyres_mode=anyres_mode)
        self._rank, self._world_size = 0, 1

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def _items(self, requests) -> list:
        from llava.eval.runner import VQAItem

        items = []
        for number, request in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual is not None else []
            images = [v for v in (visuals or []) if v is not None]
            for image in images:
                if not isinstance(image, Image.Image):
                    raise ValueError(f"{task} doc {doc_id}: {MODEL_ID} answers image tasks only, got a "
                                     f"{type(image).__name__} visual (videos are not supported yet)")
            items.append(VQAItem(question_id=number, question=question_of(context), images=images,
                                 extra={"gen_kwargs": dict(gen_kwargs or {})}))
        return items

    def _generation(self, gen_kwargs: dict):
        from llava.eval.runner import GenerationArgs

        unsupported = sorted(set(gen_kwargs) - {"until", "max_new_tokens", "temperature", "top_p", "num_beams",
                                               "do_sample"})
        if unsupported:
            raise ValueError(f"{MODEL_ID}: generation argument(s) {unsupported} are not supported")
        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        if gen_kwargs.get("do_sample") is False:
            temperature = 0.0
        return GenerationArgs(temperature=temperature, top_p=gen_kwargs.get("top_p"),
                              num_beams=int(gen_kwargs.get("num_beams", 1) or 1),
                              max_new_tokens=int(gen_kwargs.get("max_new_tokens", self.max_new_tokens)))

    def generate_until(self, requests) -> list[GenerationResult]:
        """Answer every request with the runner of our drivers, one generation setting at a time."""
        from llava.eval.runner import run_vqa

        items = self._items(requests)
        groups: dict[str, list] = {}
        for item in items:
            groups.setdefault(json.dumps(item.extra["gen_kwargs"], sort_keys=True, default=str), []).append(item)
        records: dict[int, dict] = {}
        with tempfile.TemporaryDirectory(prefix="fastervlm-lmms-") as tmp:
            for number, group in enumerate(groups.values()):
                gen_kwargs = group[0].extra["gen_kwargs"]
                path = os.path.join(tmp, f"answers{number}.jsonl")
                run_vqa(self.model, self.tokenizer, self.image_processor, group, path, self.conv_mode,
                        self._generation(gen_kwargs), self.model_id, batch_size=self.batch_size_per_gpu,
                        resume=False, share_prefix=self.share_prefix, vision_cache_size=self.vision_cache_size,
                        on_answer=lambda record: records.__setitem__(record["question_id"], record),
                        inputs_builder=self.inputs_builder)
        out = []
        for item in items:
            record = records[item.question_id]
            until = item.extra["gen_kwargs"].get("until") or []
            text = _cut(record["text"], [until] if isinstance(until, str) else until)
            counts = record.get("metadata", {}).get("visual_tokens", [])
            per_image = counts if isinstance(counts, list) else [counts]
            out.append(GenerationResult(text=text, token_counts=VisualTokenCounts(
                visual_tokens=sum(per_image), visual_tokens_per_image=per_image)))
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError(f"{MODEL_ID} answers generation tasks only (generate_until); "
                                  "loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError(f"{MODEL_ID} does not support multi-round generation")


def _cut(text: str, until: list[str]) -> str:
    """The answer up to the first stop string of lmms-eval's `until` (the runner stops at EOS only)."""
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text
