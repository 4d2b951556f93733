"""LLaVA on a LLaMA/Vicuna LLM: transformers' LlamaForCausalLM plus a vision tower and projector.

Weight names follow the original LLaVA layout: `model.embed_tokens`, `model.layers.*`,
`model.mm_projector.{0,2}`, `lm_head`, and (when stored in the checkpoint) the CLIP tower under
`model.vision_tower.vision_tower.*`. `generate(input_ids, images=...)` returns only the new tokens,
as LLaVA's does; `forward(..., images=..., labels=...)` returns the loss.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava.pruning import get_method

from ..llava_arch import LlavaMetaForCausalLM, MultimodalInputs, VisualTokenNum
from ..multimodal_encoder.clip_encoder import CLIPVisionTower
from ..multimodal_projector.builder import build_vision_projector


class LlavaLlamaConfig(LlamaConfig):
    """LlamaConfig plus LLaVA's `mm_*` fields and the pruning settings.

    Extra fields: mm_vision_tower, mm_hidden_size, mm_vision_select_layer (-2),
    mm_vision_select_feature ('patch'), mm_projector_type ('mlp2x_gelu'), image_aspect_ratio ('pad'),
    mm_patch_merge_type ('flat'), tokenizer_model_max_length, tokenizer_padding_side,
    vision_config (a CLIPVisionConfig dict when the tower's weights live in the checkpoint),
    visual_token_num (K kept per image; None keeps all), pruning_method ('fastervlm'), pruning_args.
    """

    model_type = "llava_llama"

    def __init__(self, **kwargs):
        defaults = dict(
            mm_vision_tower=None,
            mm_hidden_size=None,
            mm_vision_select_layer=-2,
            mm_vision_select_feature="patch",
            mm_projector_type="mlp2x_gelu",
            image_aspect_ratio="pad",
            mm_patch_merge_type="flat",
            mm_use_im_start_end=False,
            mm_use_im_patch_token=False,
            vision_config=None,
            visual_token_num=None,
            pruning_method="fastervlm",
            pruning_args={},
            anyres_mode="faithful",
        )
        for key, value in defaults.items():
            kwargs.setdefault(key, value)
        super().__init__(**kwargs)


class LlavaLlamaModel(LlamaModel):
    """LlamaModel that also owns `vision_tower` (optional until attached) and `mm_projector`."""

    def __init__(self, config: LlavaLlamaConfig):
        super().__init__(config)
        self.vision_tower: CLIPVisionTower | None = None
        if getattr(config, "vision_config", None):
            self.vision_tower = CLIPVisionTower.from_config(
                config.vision_config, config.mm_vision_select_layer, config.mm_vision_select_feature
            )
        if "unpad" in (getattr(config, "mm_patch_merge_type", None) or ""):
            # LLaVA-NeXT's learned token that ends each row of the unpadded grid.
            self.image_newline = nn.Parameter(torch.randn(config.hidden_size) / config.hidden_size**0.5)
        self.mm_projector: nn.Module | None = None
        if getattr(config, "mm_hidden_size", None):
            self.mm_projector = build_vision_projector(
                config.mm_projector_type, config.mm_hidden_size, config.hidden_size
            )
        self.post_init()


class LlavaLlamaForCausalLM(LlamaForCausalLM, LlavaMetaForCausalLM):
    """LLaVA-1.5 with training-free visual-token pruning before the projector."""

    config_class = LlavaLlamaConfig
    # Original-layout checkpoints may store the CLIP tower; the loader attaches it separately.
    _keys_to_ignore_on_load_unexpected = [r"^model\.vision_tower\."]

    def __init__(self, config: LlavaLlamaConfig):
        # Same members as LlamaForCausalLM, with the multimodal LlamaModel.
        super(LlamaForCausalLM, self).__init__(config)
        self.model = LlavaLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_model(self) -> LlavaLlamaModel:
        return self.model

    def attach_vision_tower(self, tower: CLIPVisionTower) -> None:
        """Install a loaded vision tower on the device of the token embeddings."""
        device = self.model.embed_tokens.weight.device
        tower.select_layer = self.config.mm_vision_select_layer
        self.model.vision_tower = tower.to(device=device)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values=None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        images: torch.Tensor | Sequence[torch.Tensor] | None = None,
        image_sizes: list | None = None,
        visual_token_num: VisualTokenNum = "config",
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Causal-LM forward; with `images`, placeholders in input_ids [B, L] become visual tokens first."""
        pruner = None
        if inputs_embeds is None and images is not None:
            side = getattr(self.config, "tokenizer_padding_side", None) or "right"
            mm = self.prepare_multimodal_inputs(
                input_ids, images, attention_mask, labels, visual_token_num, side, image_sizes=image_sizes
            )
            input_ids, inputs_embeds, labels = None, mm.inputs_embeds, mm.labels
            attention_mask, position_ids = mm.attention_mask, mm.position_ids
            pruner = self.in_llm_pruner(mm)
        with pruner.installed() if pruner else nullcontext():
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                inputs_embeds=inputs_embeds,
                labels=labels,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                **kwargs,
            )

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        images: torch.Tensor | Sequence[torch.Tensor] | None = None,
        image_sizes: list | None = None,
        attention_mask: torch.Tensor | None = None,
        visual_token_num: VisualTokenNum = "config",
        vision_signals=None,
        **kwargs,
    ) -> torch.LongTensor:
        """Generate from prompts with image placeholders; returns only the new tokens [B, T_new].

        `inputs` [B, L] may be padded on either side (give `attention_mask`); the spliced batch is
        left-padded. `visual_token_num` overrides the model's K, per image if a list;
        `vision_signals` (from `vision_signals(images)`) reuses one tower run across budgets. After the
        call, `self.last_multimodal` holds the visual-token counts and kept indices per image.
        """
        if "inputs_embeds" in kwargs:
            return super().generate(attention_mask=attention_mask, **kwargs)
        mm = self.prepare_multimodal_inputs(
            inputs, images, attention_mask, None, visual_token_num, "left", signals=vision_signals,
            image_sizes=image_sizes,
        )
        self.last_multimodal = mm.encoded
        pruner = self.in_llm_pruner(mm)
        with pruner.installed() if pruner else nullcontext():
            out = super().generate(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask, **kwargs)
        if pruner:
            mm.encoded.kept_indices = list(pruner.kept)
            mm.encoded.in_llm = pruner.report()
        return out

    def in_llm_pruner(self, mm: MultimodalInputs):
        """The hook object of an in-LLM pruning method (e.g. FastV) for this batch, or None."""
        method = get_method(getattr(self.config, "pruning_method", None) or "fastervlm")
        if method.stage != "in_llm" or mm.encoded is None:
            return None
        args = {**method.defaults, **method.check_args(dict(getattr(self.config, "pruning_args", None) or {}))}
        if all(k is None for k in mm.encoded.budgets) and args.get("ratio") is None:
            return None  # no budget: nothing to prune
        return method.llm_pruner(self, mm.image_spans, mm.encoded.budgets, mm.attention_mask, **args)
