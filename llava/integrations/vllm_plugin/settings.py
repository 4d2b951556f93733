"""The plugin's pruning settings, read once per server from the HF config overrides or the environment."""

from __future__ import annotations

import os
from typing import Any

from llava.pruning import PruningConfig, get_method

KEYS = {  # hf-overrides attribute -> environment variable
    "fastervlm_visual_token_num": "FASTERVLM_VISUAL_TOKEN_NUM",
    "fastervlm_pruning_method": "FASTERVLM_PRUNING_METHOD",
    "fastervlm_pruning_args": "FASTERVLM_PRUNING_ARGS",
}


def _value(hf_config: Any, key: str) -> Any:
    value = getattr(hf_config, key, None)
    if value is None:
        value = os.environ.get(KEYS[key]) or None
    return value


def pruning_settings(hf_config: Any) -> PruningConfig:
    """The server's PruningConfig; a bad value is a ValueError naming the override and the variable."""
    k = _value(hf_config, "fastervlm_visual_token_num")
    method = _value(hf_config, "fastervlm_pruning_method") or "fastervlm"
    args = _value(hf_config, "fastervlm_pruning_args")
    try:
        k = None if k in (None, "", "none", "None") else int(k)
        cfg = PruningConfig(method=str(method), visual_token_num=k, method_args=args)
    except (TypeError, ValueError) as err:
        raise ValueError(f"FasterVLM vLLM plugin: bad pruning settings ({err}); set fastervlm_visual_token_num / "
                         "fastervlm_pruning_method / fastervlm_pruning_args in --hf-overrides, or "
                         "FASTERVLM_VISUAL_TOKEN_NUM / FASTERVLM_PRUNING_METHOD / FASTERVLM_PRUNING_ARGS") from None
    method = get_method(cfg.method)
    if method.stage != "pre_llm":
        raise ValueError(f"FasterVLM vLLM plugin: {cfg.method!r} prunes inside the LLM, which vLLM's model runner "
                         "does not allow; choose a pre-LLM method (fastervlm, vtc_cls, visionzip, ...)")
    if method.question_dependent:
        raise ValueError(f"FasterVLM vLLM plugin: {cfg.method!r} reads the question text, which vLLM's image "
                         "encoder step never sees; choose a method blind to the question (fastervlm, visionzip, ...)")
    return cfg


def kept_tokens(cfg: PruningConfig, num_patches: int) -> int:
    """Visual tokens per image under `cfg` for an image of `num_patches` patches."""
    k = cfg.budget(num_patches)
    return num_patches if k is None else min(k, num_patches)
