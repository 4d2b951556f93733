"""Registry of model families: which code loads a checkpoint, told apart by its config.json.

A family is a `detect(raw_config) -> bool` test plus a `load(path, raw_config, options)` that builds
a `LlavaForPruning` (vision adapter, projector, splice, Auto-loaded LLM) with its weights. A new
family is one module with a `@register_family` loader; `load_pretrained_model` and the
registry-parametrised tests pick it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

_FAMILIES: dict[str, "Family"] = {}


@dataclass(frozen=True)
class LoadOptions:
    """How to load: dtype, devices, attention implementations, and the explicit escapes.

    llm_kwargs go to the LLM's `from_pretrained` (dtype, device_map, attn_implementation).
    """

    dtype: torch.dtype = torch.float32
    llm_kwargs: dict = field(default_factory=dict)
    vision_attn_implementation: str = "sdpa"
    vision_tower_path: str | None = None
    model_base: str | None = None
    allow_missing_weights: bool = False
    # towers without [CLS] (SigLIP): the signal handed to [CLS]-attention methods (llava.pruning.signals)
    cls_stand_in: str = "mean_attn"


@dataclass(frozen=True)
class Family:
    """A registered family. tiny(out_dir) -> folder writes a small random checkpoint of this layout
    with the libraries' own save functions (the registry-parametrised tests load it).

    same_tiny: its tiny checkpoint holds the embedded tiny LLaVA-1.5's weights (the family tests
    compare the two); False for families of another geometry (Video-LLaVA: tests/video).
    """

    name: str
    detect: Callable[[dict], bool]
    load: Callable[[str, dict, LoadOptions], Any]
    tiny: Callable[[Any], Any]
    description: str
    same_tiny: bool = True


def register_family(name: str, detect: Callable[[dict], bool], tiny: Callable[[Any], Any],
                    description: str = "", same_tiny: bool = True) -> Callable:
    """Decorator registering `load(path, raw_config, options) -> LlavaForPruning` as family `name`."""

    def wrap(load: Callable) -> Callable:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is registered twice")
        doc = description or (load.__doc__ or "").strip().split("\n")[0]
        _FAMILIES[name] = Family(name, detect, load, tiny, doc, same_tiny)
        return load

    return wrap


def list_families() -> list[str]:
    _ensure_builtin()
    return list(_FAMILIES)


def get_family(name: str) -> Family:
    _ensure_builtin()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(_FAMILIES)}") from None


def family_of(raw: dict, path: str) -> Family:
    """The first registered family whose `detect` accepts this config.json."""
    _ensure_builtin()
    for family in _FAMILIES.values():
        if family.detect(raw):
            return family
    raise ValueError(
        f"{path}: config.json (model_type={raw.get('model_type')!r}, architectures={raw.get('architectures')}) "
        f"belongs to no known model family ({', '.join(sorted(_FAMILIES))})"  # sorted: registration order varies
    )


def _ensure_builtin() -> None:
    from . import family_llava  # noqa: F401  (registers the LLaVA layouts)
    from . import family_video_llava  # noqa: F401  (registers Video-LLaVA)
    from . import family_onevision  # noqa: F401  (registers LLaVA-OneVision)
    from . import family_qwen2_5_vl  # noqa: F401  (registers Qwen2.5-VL)
    from . import family_qwen3_vl  # noqa: F401  (registers Qwen3-VL)
