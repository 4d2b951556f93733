"""Qwen2.5-VL on the platform: the ViT adapter, the patch merger as projector, M-RoPE splice, stock text model.

    pixel_values [P, C*2*14*14], image_grid_thw [n_img, 3]
      --Qwen25VisionTower (stock blocks, probe signals)--> per image: groups [G_i, 4*D] + mean_attn [G_i]
      --selector on merged tokens (K_i <= K per image)--> kept groups
      --patch merger on the kept groups only--> n_img x [K_i, H]
      --qwen_layout.splice (unpruned or compact M-RoPE positions)--> inputs_embeds [B, L', H], position_ids [3, B, L']
      --Qwen2_5_VLTextModel + lm_head (stock; MRopeLoop for generation)--> text

The parts are the checkpoint's own modules (built by transformers' `Qwen2_5_VLForConditionalGeneration`
and taken apart): `vision_tower.vision_tower` is the stock ViT with its merger, `language_model` the
stock text model, `lm_head` the output projection. Nothing is subclassed.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava.pruning import get_method
from llava.pruning.base import SIGNAL_PROJECTED, SIGNAL_TEXT_RELEVANCE
from llava.pruning.config import PruningConfig
from llava.pruning.in_llm import make_dropper
from llava.pruning.signals import refuse_other_stand_in

from . import qwen_layout
from .input_checks import check_context, check_grid, check_prompts
from .llava_arch import FROM_PRUNING, EncodedImages, LlavaMetaForCausalLM, VisualTokenNum
from .llm_loop import LLMLoop
from .llm_loop import generate as loop_generate
from .qwen_parts import QwenComposedParts
from .multimodal_encoder.qwen2_5_vl_encoder import MissingSignalError, QwenImages, Qwen25VisionTower

FAMILY = "qwen2_5_vl"


def _stock_model_class() -> type:
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    return Qwen2_5_VLModel


class QwenVLForPruning(QwenComposedParts, nn.Module, LlavaMetaForCausalLM):
    """Qwen2.5-VL composed from its stock parts, with pre-LLM visual-token pruning on merged tokens.

    config: the checkpoint's `Qwen2_5_VLConfig`; vision_tower: the ViT adapter; language_model: the
    stock `Qwen2_5_VLTextModel`; lm_head: its output projection.
    """

    family = FAMILY

    def __init__(self, config, vision_tower: Qwen25VisionTower, language_model: nn.Module, lm_head: nn.Module,
                 generation_config=None) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.language_model = language_model
        self.lm_head = lm_head
        self._generation_config = generation_config
        self.pruning = PruningConfig()
        self.last_multimodal: EncodedImages | None = None

    # ---- parts ------------------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        return int(self.config.image_token_id)

    # ---- images -> visual tokens ------------------------------------------------------------------
    @torch.no_grad()
    def vision_signals(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor,
                       needs: frozenset[str] | None = None, pruning: PruningConfig | None = None) -> QwenImages:
        """One ViT run (reusable across budgets): QwenImages with the signals `needs` names (default:
        the method's), `projected` (every merged token through the merger) included when named."""
        needs = self.pruning_needs(pruning) if needs is None else frozenset(needs)
        self._check_needs(needs, get_method(self._pruning(pruning).method).name)
        refuse_other_stand_in(self._pruning(pruning).args, self.vision_tower.cls_stand_in, FAMILY)
        out = self.vision_tower(pixel_values, image_grid_thw, needs=needs - {SIGNAL_PROJECTED})
        if SIGNAL_PROJECTED in needs:
            out.signals = [s.with_values(projected=self.vision_tower.project(s.features[0])[None])
                           for s in out.signals]
        return out

    def _check_needs(self, needs: frozenset[str], method: str) -> None:
        if SIGNAL_TEXT_RELEVANCE in needs:
            raise ValueError(f"pruning method {method!r} cannot run on {FAMILY}: signal 'text_relevance' needs "
                             "CLIP's text tower, which a Qwen2.5-VL checkpoint does not ship")
        try:
            self.vision_tower.tower_signals(needs - {SIGNAL_PROJECTED})
        except MissingSignalError as err:
            raise ValueError(f"pruning method {method!r} cannot run on {FAMILY}: {err}") from None

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                      visual_token_num: VisualTokenNum = FROM_PRUNING, pruning: PruningConfig | None = None,
                      signals: QwenImages | None = None) -> EncodedImages:
        """Images -> EncodedImages (n_img x [K_i, H]): K_i <= K merged tokens per image, the merger on kept groups.

        An image with N_i <= K keeps every token (exactly the unpruned model's). `signals` (from
        `vision_signals`) skips the ViT.
        """
        cfg = self._pruning(pruning)
        method = get_method(cfg.method)
        merge = self.config.vision_config.spatial_merge_size
        if signals is None:
            grid = torch.as_tensor(image_grid_thw)
            counts = [int(t * (h // merge) * (w // merge)) for t, h, w in grid.tolist()]
        else:
            counts = signals.counts
        budgets, prune, needs = qwen_layout.selection_plan(method, cfg, counts, visual_token_num)
        if signals is None:
            signals = self.vision_signals(pixel_values, image_grid_thw, needs=needs, pruning=cfg)
        else:
            missing = sorted(n for n in needs if all(getattr(s, n) is None for s in signals.signals))
            if missing:
                raise ValueError(f"the vision signals lack {missing}, which {method.name!r} needs; run "
                                 "vision_signals() with this pruning config")
        features, kept = [], []
        for sig, k, p in zip(signals.signals, budgets, prune):
            if not p:
                features.append(sig.projected[0] if sig.projected is not None else
                                self.vision_tower.project(sig.features[0]))  # [G, 4D] -> [G, H]
                kept.append(None)
                continue
            selection = method.select(sig, k, **cfg.args)
            if selection.tokens is not None:
                raise ValueError(f"pruning method {method.name!r} merges tokens, which {FAMILY} does not support yet "
                                 "(use a method that keeps tokens)")
            idx = selection.indices[0]
            if sig.projected is not None:  # already projected (DivPrune): the exact LLM-input tokens
                features.append(sig.projected[0][idx])
            else:
                features.append(self.vision_tower.project(sig.features[0][idx]))  # [K, 4D] -> [K, H]
            kept.append(idx.cpu())
        return EncodedImages(features=features, kept_indices=kept, num_patches=max(counts, default=0),
                             budgets=budgets, unpruned_counts=counts, grids=list(signals.grids))

    # ---- the LLM's inputs ---------------------------------------------------------------------------
    def prepare_multimodal_inputs(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None,
                                  pixel_values: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                                  visual_token_num: VisualTokenNum = FROM_PRUNING,
                                  pruning: PruningConfig | None = None, signals: QwenImages | None = None):
        """Prompts with expanded `<|image_pad|>` runs -> qwen_layout's MultimodalInputs (position_ids [3, B, L'])."""
        cfg = self._pruning(pruning)
        check_prompts(input_ids, attention_mask, FAMILY)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        has_images = (input_ids == self.image_token_id).any()
        if not has_images:
            if pixel_values is not None:
                raise ValueError(f"images were given but the prompts hold no {FAMILY} image pad tokens; build them "
                                 "with this checkpoint's processor")
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[None].expand(3, -1, -1)
            return qwen_layout.splice(input_ids, attention_mask, self.get_input_embeddings(), [], [], [], positions,
                                      self.image_token_id)
        no_images = ValueError(f"{FAMILY}: the prompts hold image pad tokens but no images were given; pass the "
                               "processor's pixel_values and image_grid_thw")
        if pixel_values is None and signals is None and image_grid_thw is None:
            raise no_images
        if image_grid_thw is None:
            raise ValueError(f"{FAMILY}: image_grid_thw (the processor's (t, h, w) per image) is required with images")
        grid = check_grid(image_grid_thw, FAMILY).to(input_ids.device)
        merge = self.config.vision_config.spatial_merge_size
        qwen_layout.check_runs(input_ids, attention_mask, self.image_token_id,
                               [int(t * (h // merge) * (w // merge)) for t, h, w in grid.tolist()])
        if pixel_values is None and signals is None:
            raise no_images
        encoded = self.encode_images(pixel_values, grid, visual_token_num, cfg, signals)
        positions, _ = qwen_layout.stock_positions(_stock_model_class(), self.config, input_ids, attention_mask,
                                                   self.image_token_id, grid)
        mm = qwen_layout.splice(input_ids, attention_mask, self.get_input_embeddings(), encoded.features,
                                encoded.kept_indices, encoded.unpruned_counts, positions, self.image_token_id,
                                cfg.position_mode, encoded)
        check_context(mm.attention_mask, self.config.get_text_config())
        return mm

    # ---- forward / generate -----------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                images: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                image_sizes=None, visual_token_num: VisualTokenNum = FROM_PRUNING,
                pruning: PruningConfig | None = None, pixel_values: torch.Tensor | None = None, **kwargs):
        """Logits [B, L', V] of the pruned (left-padded) sequence; `images` and `pixel_values` are the same input."""
        pixels = images if images is not None else pixel_values
        kwargs.pop("mm_token_type_ids", None)  # derived from the pad tokens
        mm = self.prepare_multimodal_inputs(input_ids, attention_mask, pixels, qwen_layout.grid_from(image_grid_thw, image_sizes, FAMILY),
                                            visual_token_num, pruning)
        self.last_multimodal = mm.encoded
        if self.in_llm_pruner(mm, pruning) is not None:
            raise ValueError("in-LLM pruning (e.g. fastv) runs in generate(); forward() would run the unpruned LLM")
        logits = qwen_layout.full_logits(self.language_model, self.lm_head, mm.inputs_embeds, mm.attention_mask,
                                         mm.position_ids, **kwargs)
        return CausalLMOutputWithPast(logits=logits)

    @torch.no_grad()
    def generate(self, inputs: torch.LongTensor | None = None, images: torch.Tensor | None = None,
                 image_sizes=None, attention_mask: torch.Tensor | None = None,
                 visual_token_num: VisualTokenNum = FROM_PRUNING, vision_signals: QwenImages | None = None,
                 pruning: PruningConfig | None = None, texts: str | Sequence[str] | None = None,
                 image_grid_thw: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None,
                 input_ids: torch.LongTensor | None = None, **kwargs) -> torch.LongTensor:
        """Generate from processor prompts; returns only the new tokens [B, T_new] (with
        `return_dict_in_generate`, transformers' output with those as `sequences`, and with
        `output_logits` each step's logits).

        images / pixel_values: the processor's packed patches; image_grid_thw (or image_sizes holding
        it): its (t, h, w) per image. `pruning` sets the method, K (at most K merged tokens per image)
        and the position mode; `visual_token_num` overrides K, per image if a list. After the call
        `self.last_multimodal` holds per image `token_counts`, `unpruned_counts`, `budgets`, kept
        indices (raster order of the merged grid) and `grids`. `texts` is accepted for the runner and
        unused (no method that reads it runs here).
        """
        ids = inputs if inputs is not None else input_ids
        pixels = images if images is not None else pixel_values
        kwargs.pop("mm_token_type_ids", None)
        kwargs.pop("truncate_prompts", None)  # the runner's keyword; prompts are never cut here
        mm = self.prepare_multimodal_inputs(ids, attention_mask, pixels, qwen_layout.grid_from(image_grid_thw, image_sizes, FAMILY),
                                            visual_token_num, pruning, vision_signals)
        self.last_multimodal = mm.encoded
        pruner = self.in_llm_pruner(mm, pruning)
        if pruner is None:
            loop = qwen_layout.MRopeLoop(self.language_model, self.lm_head)
            return loop_generate(loop, mm.inputs_embeds, mm.attention_mask, mm.position_ids, self.generation_config,
                                 **kwargs)
        loop = LLMLoop(self.language_model, self.lm_head, pruner)  # drops tokens; positions [3, B, T] carried along
        out = loop_generate(loop, mm.inputs_embeds, mm.attention_mask, mm.position_ids, self.generation_config,
                            **kwargs)
        mm.encoded.kept_indices = list(pruner.kept)
        mm.encoded.in_llm = pruner.report()
        return out

    def in_llm_pruner(self, mm, pruning: PruningConfig | None = None):
        """The token dropper of an in-LLM method (fastv, dart, ...) for this batch, or None (nothing to prune)."""
        if mm.encoded is None:
            return None
        cfg = self._pruning(pruning)
        pruner = make_dropper(cfg, mm.image_spans, mm.encoded.budgets, self.config.get_text_config().num_hidden_layers)
        if pruner is None:
            return None
        qwen_layout.refuse_renumbering(pruner, cfg.method, FAMILY)
        return pruner
