"""Registry of vision adapters: which tower class runs a checkpoint's vision model.

An adapter wraps one family of vision towers (CLIP and SigLIP today; the Qwen ViTs next). It runs
the tower up to the selected layer, returns the patch features and the signals a pruning method
names (through the probe), and knows its patch grid. It is found by the `model_type` of the vision
config; a new tower is one module with a `@register_vision_adapter(...)` class.

The contract, read by the rest of the package: `from_pretrained(path, select_layer, select_feature,
allow_missing_weights=..., **load_kwargs)`, `from_config(config, select_layer, select_feature,
attn_implementation=...)`, `forward(images, needs) -> VisionSignals`, and the attributes
`image_processor`, `num_patches`, `num_patches_per_side`, `config`, `dtype`, `device`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

_ADAPTERS: dict[str, type] = {}


def register_vision_adapter(*model_types: str) -> Callable[[type], type]:
    """Class decorator: the adapter for vision configs whose `model_type` is one of `model_types`."""

    def wrap(cls: type) -> type:
        for name in model_types:
            if name in _ADAPTERS:
                raise ValueError(f"vision model_type {name!r} already has the adapter {_ADAPTERS[name].__name__}")
            _ADAPTERS[name] = cls
        return cls

    return wrap


def list_vision_adapters() -> dict[str, type]:
    _ensure_builtin()
    return dict(_ADAPTERS)


def vision_adapter(model_type: str | None) -> type:
    """The adapter class for a vision config's model_type."""
    _ensure_builtin()
    try:
        return _ADAPTERS[model_type]
    except KeyError:
        raise ValueError(f"no vision adapter for model_type {model_type!r}; known: {', '.join(sorted(_ADAPTERS))}") \
            from None


def vision_adapter_for_folder(path: str) -> type:
    """The adapter for a tower folder, from the model_type in its config.json."""
    config = Path(path) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"vision tower folder {path} has no config.json")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except ValueError as err:
        raise ValueError(f"{config}: not valid JSON ({err}); restore this file from the original checkpoint") from None
    return vision_adapter(model_type)


def _ensure_builtin() -> None:
    from . import clip_encoder  # noqa: F401  (registers CLIP)
    from . import siglip_encoder  # noqa: F401  (registers SigLIP)
    from . import qwen2_5_vl_encoder  # noqa: F401  (registers Qwen2.5-VL's ViT)
    from . import qwen3_vl_encoder  # noqa: F401  (registers Qwen3-VL's ViT)
