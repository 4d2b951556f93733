"""LLaVA on a LLaMA/Vicuna LLM, under the names LLaVA's own code uses.

The model itself is the composition in `llava.model.multimodal` (an Auto-loaded causal LM plus the
vision adapter, projector and splice); these names build it for a LLaMA config.
"""

from __future__ import annotations

from transformers import LlamaConfig

from ..multimodal import LlavaForPruning, with_mm_defaults


def LlavaLlamaConfig(**fields) -> LlamaConfig:  # noqa: N802 - LLaVA's name for this config
    """A LlamaConfig carrying LLaVA's `mm_*` fields (defaults filled in)."""
    return with_mm_defaults(LlamaConfig(**fields))


LlavaLlamaForCausalLM = LlavaForPruning
