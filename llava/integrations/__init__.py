"""Pruning inside other libraries, each as a subclass or an entry point (never a patch).

`transformers_native`: FasterVLMLlava / FasterVLMLlavaProcessor, subclasses of transformers' LLaVA pair.
`transformers_next`: FasterVLMLlavaNext / FasterVLMLlavaNextProcessor, the same for LLaVA-NeXT.
`lmms_eval_model`: lmms-eval's `fastervlm` model; `vllm_plugin`: vLLM's FasterVLM LLaVA architecture.
"""
