"""The plugin's pruning settings: per server from the HF config overrides or the environment, per request
from vLLM's `mm_processor_kwargs`."""

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
    check_servable(cfg.method, "pruning method")
    return cfg


def kept_tokens(cfg: PruningConfig, num_patches: int) -> int:
    """Visual tokens per image under `cfg` for an image of `num_patches` patches."""
    k = cfg.budget(num_patches)
    return num_patches if k is None else min(k, num_patches)


# Per-request `mm_processor_kwargs` keys (the server's defaults come from `pruning_settings`).
REQUEST_KEYS = ("fastervlm_visual_token_num", "fastervlm_pruning_method")
_NO_BUDGET = (None, "", "none", "None")


def request_pruning(server: PruningConfig, kwargs) -> PruningConfig:
    """The PruningConfig of one request: the server's, with the request's `mm_processor_kwargs` overrides.

    `fastervlm_visual_token_num` (an integer, or None / "none" for every token) replaces K;
    `fastervlm_pruning_method` replaces the method, which then runs with its own defaults (the
    server's `fastervlm_pruning_args` belong to the server's method).
    """
    cfg = server
    try:
        if "fastervlm_visual_token_num" in kwargs:
            k = kwargs["fastervlm_visual_token_num"]
            cfg = cfg.replace(visual_token_num=None if k in _NO_BUDGET else int(k))
        method = kwargs.get("fastervlm_pruning_method")
        if method not in (None, "", cfg.method):
            cfg = cfg.replace(method=str(method), method_args=())
    except (TypeError, ValueError) as err:
        raise ValueError(f"FasterVLM vLLM plugin: bad mm_processor_kwargs ({err}); fastervlm_visual_token_num takes "
                         "an integer >= 1 or null, fastervlm_pruning_method a registered pre-LLM method") from None
    if cfg is not server:
        check_servable(cfg.method, "mm_processor_kwargs fastervlm_pruning_method")
    return cfg


def check_servable(name: str, where: str) -> None:
    """Refuse a method vLLM's image step cannot run (in-LLM, or reading the question)."""
    method = get_method(name)
    if method.stage != "pre_llm":
        raise ValueError(f"FasterVLM vLLM plugin: {where} {name!r} prunes inside the LLM, which vLLM's model runner "
                         "does not allow; choose a pre-LLM method (fastervlm, vtc_cls, visionzip, ...)")
    if method.question_dependent:
        raise ValueError(f"FasterVLM vLLM plugin: {where} {name!r} reads the question text, which vLLM's image "
                         "encoder step never sees; choose a method blind to the question (fastervlm, visionzip, ...)")


def method_index(name: str) -> int:
    """A method's place in the sorted registry: how a request's method travels to the model as a tensor."""
    from llava.pruning import list_methods

    return sorted(list_methods()).index(name)


def method_of(index: int) -> str:
    from llava.pruning import list_methods

    return sorted(list_methods())[int(index)]
