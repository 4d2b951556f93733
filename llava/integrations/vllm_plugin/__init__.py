"""vLLM out-of-tree plugin: LLaVA-1.5 (llava-hf layout) served with FasterVLM's pruned visual tokens.

vLLM calls `register()` in every process through the `vllm.general_plugins` entry point. It adds one
architecture, `FasterVLMLlavaForConditionalGeneration`, and changes nothing else in vLLM: a model is
served pruned only when asked for it, per server, e.g.

    vllm serve llava-hf/llava-1.5-7b-hf --hf-overrides \\
        '{"architectures": ["FasterVLMLlavaForConditionalGeneration"], "fastervlm_visual_token_num": 58}'

(`fastervlm_pruning_method` and `fastervlm_pruning_args` choose another pre-LLM method; the
environment variables FASTERVLM_VISUAL_TOKEN_NUM / FASTERVLM_PRUNING_METHOD / FASTERVLM_PRUNING_ARGS
are read when the overrides don't name them.) A request may override K and the method through
vLLM's `mm_processor_kwargs` (`fastervlm_visual_token_num`, `fastervlm_pruning_method`; the OpenAI
server accepts them with `--trust-request-mm-kwargs`).
"""

ARCHITECTURE = "FasterVLMLlavaForConditionalGeneration"


def register() -> None:
    """Register the FasterVLM LLaVA architecture with vLLM's model registry (lazily, by path)."""
    from llava.torchvision_compat import prepare_torchvision

    prepare_torchvision()  # vLLM's LLaVA imports transformers' torchvision image processors
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, f"{__name__}.model:FasterVLMLlavaForConditionalGeneration")
