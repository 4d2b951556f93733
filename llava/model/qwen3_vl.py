"""Qwen3-VL on the platform: the ViT adapter, selection on merged tokens, DeepStack, M-RoPE, the stock text model.

    pixel_values [P, C*T*p*p] + image_grid_thw [n, 3]
      --ViT adapter (stock blocks, probe signals)--> per image: M_i merged units [M_i, 4D], DeepStack
        units per layer, signals summed over each 2 x 2 group
      --selector (registry method, K_i = PruningConfig.budget(M_i))--> kept units (sorted)
      --patch merger and DeepStack mergers on the kept units only--> [K_i, H] and L x [K_i, H]
      --qwen_layout.splice: the processor's image-pad runs shrink to the kept tokens; every kept token
        keeps the (t, h, w) position the stock `get_rope_index` gives it in the unpruned prompt, and
        the text after the image keeps its unpruned positions (or `position_mode="compact"`)
        --> inputs_embeds [B, L', H], mask, position_ids [3, B, L'], plus the visual-position mask and
        the kept tokens' DeepStack features (`deepstack_inputs`)
      --Qwen3VLTextModel's own forward (it adds the DeepStack features after its first layers at the
        visual positions), then the LM head--> logits; `qwen_layout.MRopeLoop` decodes, continuing
        each row's positions. In-LLM methods (fastv, dart, fitprune, pdrop with positions=keep) run in
        `llm_loop.LLMLoop` instead, with the DeepStack features as its `after_layer` residuals, given
        per prefill token (`deepstack_residuals`), so a dropped token's features are dropped with it.

Nothing here subclasses or patches transformers: the parts are the ones `Qwen3VLForConditionalGeneration`
loads, composed side by side; `llava.compat` checks that the text model takes the DeepStack keywords.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava import compat
from llava.pruning import get_method
from llava.pruning.base import SIGNAL_PROJECTED, SIGNAL_TEXT_RELEVANCE
from llava.pruning.config import PruningConfig
from llava.pruning.in_llm import make_dropper
from llava.pruning.in_llm import OriginResiduals
from llava.pruning.signals import refuse_other_stand_in

from . import qwen_layout
from .input_checks import check_context, check_grid, check_prompts
from .llava_arch import FROM_PRUNING, EncodedImages, LlavaMetaForCausalLM, VisualTokenNum, tower_needs
from .llm_loop import LLMLoop
from .llm_loop import generate as loop_generate
from .qwen_parts import QwenComposedParts
from .multimodal_encoder.qwen3_vl_encoder import MissingSignalError, Qwen3VLImage
from .splice import MultimodalInputs

FAMILY = "qwen3_vl"


@dataclass(frozen=True)
class QwenTokens:
    """The checkpoint's placeholder tokens."""

    image_token_id: int
    video_token_id: int

    @classmethod
    def from_config(cls, config) -> "QwenTokens":
        return cls(int(config.image_token_id), int(config.video_token_id))


def _stock_model_class() -> type:
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLModel

    return Qwen3VLModel


def check_image_runs(input_ids: torch.Tensor, valid: torch.Tensor, counts: Sequence[int], tokens: QwenTokens) -> None:
    """Each image-pad run (in reading order) must be as long as its image's merged grid (`qwen_layout.check_runs`);
    video tokens are refused. Checked before the stock position code runs, which would fail without naming it."""
    if (input_ids[valid.bool()] == tokens.video_token_id).any():
        raise ValueError(f"{FAMILY}: the prompts hold video tokens; videos are not supported on this family yet")
    qwen_layout.check_runs(input_ids, valid, tokens.image_token_id, counts)


def deepstack_inputs(mm: MultimodalInputs, deepstack: Sequence[Sequence[torch.Tensor]]) -> dict:
    """The text model's DeepStack keywords for a spliced batch: `visual_pos_masks` [B, L'] (True at every kept
    visual token) and `deepstack_visual_embeds`, per DeepStack layer the kept tokens' features [V, H] in
    row-major order (the order the stock model's masked writes read them in). deepstack: n_img x layers x
    [K_i, H], images in reading order (the order of `mm.image_spans`). {} when the batch holds no image."""
    if not deepstack:
        return {}
    visual = torch.zeros(mm.attention_mask.shape, dtype=torch.bool, device=mm.attention_mask.device)
    for b, spans in enumerate(mm.image_spans):
        for s, e in spans:
            visual[b, s:e] = True
    dtype = mm.inputs_embeds.dtype
    layers = [torch.cat([image[j] for image in deepstack]).to(mm.inputs_embeds.device, dtype)
              for j in range(len(deepstack[0]))]
    return {"visual_pos_masks": visual, "deepstack_visual_embeds": layers}


def deepstack_residuals(mm: MultimodalInputs, deep: dict) -> OriginResiduals | None:
    """The DeepStack features as the LLM loop's `after_layer` additions: per DeepStack layer j a dense [B, L', H],
    the kept tokens' features at their visual positions (the stock text model's masked add) and zeros elsewhere.
    Indexed by prefill position, so they follow their tokens through in-LLM drops. None when the batch holds no
    image."""
    if not deep:
        return None
    mask = deep["visual_pos_masks"]  # [B, L'] bool
    per_layer = {}
    for j, embeds in enumerate(deep["deepstack_visual_embeds"]):  # [V, H] in row-major order of the mask
        dense = mm.inputs_embeds.new_zeros(mm.inputs_embeds.shape)
        dense[mask] = embeds.to(dense)
        per_layer[j] = dense
    return OriginResiduals(per_layer)


class Qwen3VLForPruning(QwenComposedParts, nn.Module, LlavaMetaForCausalLM):
    """Qwen3-VL composed of its loaded parts, with pre-LLM pruning on merged tokens.

    qwen_config: the checkpoint's `Qwen3VLConfig`; vision_tower: the ViT adapter (`Qwen3VLVisionTower`);
    language_model: the stock `Qwen3VLTextModel`; lm_head: its output projection. `config` is the text
    model's config (the LLM's, as on the LLaVA families: `num_hidden_layers`, `hidden_size`, ...).
    """

    family = FAMILY

    def __init__(self, qwen_config, vision_tower: nn.Module, language_model: nn.Module, lm_head: nn.Module,
                 generation_config=None) -> None:
        super().__init__()
        compat.check_deepstack_kwargs(language_model)
        self.vision_tower = vision_tower
        self.language_model = language_model
        self.llm_head = lm_head
        self.qwen_config = qwen_config
        self.config = language_model.config
        self.tokens = QwenTokens.from_config(qwen_config)
        self._generation_config = generation_config
        self.pruning = PruningConfig()
        self.last_multimodal: EncodedImages | None = None

    # ---- parts ------------------------------------------------------------------------------------
    @property
    def lm_head(self) -> nn.Module:
        return self.llm_head

    @property
    def image_token_id(self) -> int:
        return self.tokens.image_token_id

    # ---- images -> kept tokens --------------------------------------------------------------------
    def _check_needs(self, needs: frozenset[str], method: str) -> frozenset[str]:
        """The tower's share of `needs`; a signal this family cannot give is a one-line error naming it."""
        if SIGNAL_TEXT_RELEVANCE in needs:
            raise ValueError(f"pruning method {method!r} cannot run on {FAMILY}: signal 'text_relevance' scores "
                             "patches against the question with CLIP's text tower, which a Qwen3-VL checkpoint does "
                             "not ship")
        try:
            self.get_vision_tower().tower_signals(tower_needs(needs))
        except MissingSignalError as err:
            raise ValueError(f"pruning method {method!r} cannot run on {FAMILY}: {err}") from None
        return tower_needs(needs)

    @torch.no_grad()
    def vision_signals(self, images: torch.Tensor, image_grid_thw: torch.Tensor, needs: frozenset[str] | None = None,
                       pruning: PruningConfig | None = None) -> list[Qwen3VLImage]:
        """One ViT run, reusable across budgets: per image its units, DeepStack units and the signals `needs`
        names (default: the method's), `projected` (every unit through the merger) included when named."""
        needs = self.pruning_needs(pruning) if needs is None else frozenset(needs)
        tower = self.get_vision_tower()
        computed = self._check_needs(needs, self._pruning(pruning).method)
        refuse_other_stand_in(self._pruning(pruning).args, tower.cls_stand_in, FAMILY)
        out = tower(images, torch.as_tensor(image_grid_thw), needs=computed)
        if SIGNAL_PROJECTED in needs:
            dtype = next(tower.vision_tower.merger.parameters()).dtype
            for img in out:
                img.signals = img.signals.with_values(projected=tower.merge(img.signals.features[0].to(dtype))[None])
        return out

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                      visual_token_num: VisualTokenNum = FROM_PRUNING, pruning: PruningConfig | None = None,
                      signals: list[Qwen3VLImage] | None = None) -> tuple[EncodedImages, list[list[torch.Tensor]]]:
        """Encode, select on merged tokens, and merge the kept ones: -> (EncodedImages, per image its DeepStack
        features, layers x [K_i, H]). K_i = PruningConfig.budget(M_i) unless `visual_token_num` overrides it;
        an image with M_i <= K_i keeps every token. `signals` (from `vision_signals`) skips the ViT."""
        cfg = self._pruning(pruning)
        method = get_method(cfg.method)
        tower = self.get_vision_tower()
        if signals is None:
            counts = (torch.as_tensor(image_grid_thw).prod(dim=-1) // tower.merge_unit).tolist()
        else:
            counts = [img.num_tokens for img in signals]
        # in-LLM methods get every token, with its DeepStack features
        budgets, prune, needs = qwen_layout.selection_plan(method, cfg, counts, visual_token_num)
        if signals is None:
            outs = self.vision_signals(images, image_grid_thw, needs=needs, pruning=cfg)
        else:
            self._check_needs(needs, method.name)
            missing = sorted(n for n in needs if any(getattr(img.signals, n) is None for img in signals))
            if missing:
                raise ValueError(f"the vision signals lack {missing}, which {method.name!r} needs; run "
                                 "vision_signals() with this pruning config")
            outs = signals
        dtype = next(tower.vision_tower.merger.parameters()).dtype
        features, kept_all, deep_all = [], [], []
        for img, k, p in zip(outs, budgets, prune):
            groups = img.signals.features[0].to(dtype)  # [M, U*D]
            if not p:
                features.append(img.signals.projected[0] if img.signals.projected is not None else
                                tower.merge(groups))  # [M, U*D] -> [M, H]
                deep_all.append(tower.merge_deepstack([d.to(dtype) for d in img.deepstack]))
                kept_all.append(None)
                continue
            sig = img.signals
            merged_all = sig.projected[0] if sig.projected is not None else None  # DivPrune: every unit merged
            selection = method.select(sig, k, **cfg.args)
            if selection.tokens is not None:
                raise ValueError(f"pruning method {method.name!r} cannot run on {FAMILY}: it makes new tokens, which "
                                 "have no DeepStack features; use a selecting method")
            kept = selection.indices[0]  # [K] sorted merged-token indices (raster order of the merged grid)
            at = kept.to(groups.device)
            features.append(merged_all[at] if merged_all is not None else tower.merge(groups[at]))  # [K, H]
            deep_all.append(tower.merge_deepstack([d[at].to(dtype) for d in img.deepstack]))  # layers x [K, H]
            kept_all.append(kept.cpu())
        encoded = EncodedImages(features=features, kept_indices=kept_all, num_patches=max(counts, default=0),
                                budgets=budgets, unpruned_counts=counts)
        encoded.grids = [img.grid for img in outs]
        return encoded, deep_all

    def prepare_multimodal_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                                  images: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                                  visual_token_num: VisualTokenNum = FROM_PRUNING,
                                  pruning: PruningConfig | None = None,
                                  signals: list[Qwen3VLImage] | None = None) -> tuple[MultimodalInputs, dict]:
        """Processor outputs -> (qwen_layout's MultimodalInputs with position_ids [3, B, L'], the DeepStack
        keywords of the text model), encoding and pruning the images on the way."""
        cfg = self._pruning(pruning)
        check_prompts(input_ids, attention_mask, FAMILY)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        if images is None and signals is None:
            if (input_ids == self.image_token_id).any():
                raise ValueError(f"{FAMILY}: the prompts hold image-pad tokens but no images were given")
            check_image_runs(input_ids, attention_mask, [], self.tokens)
            positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[None].expand(3, -1, -1)
            return qwen_layout.splice(input_ids, attention_mask, self.get_input_embeddings(), [], [], [], positions,
                                      self.image_token_id), {}
        if image_grid_thw is None and signals is not None:
            image_grid_thw = torch.tensor([img.grid for img in signals])
        if image_grid_thw is None:
            raise ValueError(f"{FAMILY}: images need image_grid_thw (the processor returns it with pixel_values)")
        grid = check_grid(image_grid_thw, FAMILY).to(input_ids.device)
        encoded, deep = self.encode_images(images, grid, visual_token_num, cfg, signals)
        check_image_runs(input_ids, attention_mask, encoded.unpruned_counts, self.tokens)
        positions, _ = qwen_layout.stock_positions(_stock_model_class(), self.qwen_config, input_ids, attention_mask,
                                                   self.image_token_id, grid)
        mm = qwen_layout.splice(input_ids, attention_mask, self.get_input_embeddings(), encoded.features,
                                encoded.kept_indices, encoded.unpruned_counts, positions, self.image_token_id,
                                cfg.position_mode, encoded)
        check_context(mm.attention_mask, self.qwen_config.get_text_config())
        return mm, deepstack_inputs(mm, deep)

    # ---- forward / generate -----------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                images: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                image_sizes=None, visual_token_num: VisualTokenNum = FROM_PRUNING,
                pruning: PruningConfig | None = None, pixel_values: torch.Tensor | None = None,
                **kwargs) -> CausalLMOutputWithPast:
        """Logits [B, L', V] of the pruned (left-padded) sequence; `images` and `pixel_values` are the same input
        (the processor's packed patches). `mm_token_type_ids` may be passed; it is derived from the pad tokens."""
        kwargs.pop("mm_token_type_ids", None)
        pixels = images if images is not None else pixel_values
        mm, deep = self.prepare_multimodal_inputs(input_ids, attention_mask, pixels,
                                                  qwen_layout.grid_from(image_grid_thw, image_sizes, FAMILY), visual_token_num, pruning)
        self.last_multimodal = mm.encoded
        if self.in_llm_pruner(mm, pruning) is not None:
            raise ValueError("in-LLM pruning (e.g. fastv) runs in generate(); forward() would run the unpruned LLM")
        logits = qwen_layout.full_logits(self.language_model, self.lm_head, mm.inputs_embeds, mm.attention_mask,
                                         mm.position_ids, **deep, **kwargs)
        return CausalLMOutputWithPast(logits=logits)

    @torch.no_grad()
    def generate(self, inputs: torch.LongTensor | None = None, images: torch.Tensor | None = None,
                 image_sizes=None, attention_mask: torch.Tensor | None = None,
                 visual_token_num: VisualTokenNum = FROM_PRUNING, vision_signals: list[Qwen3VLImage] | None = None,
                 pruning: PruningConfig | None = None, texts: str | Sequence[str] | None = None,
                 image_grid_thw: torch.Tensor | None = None, pixel_values: torch.Tensor | None = None, input_ids: torch.LongTensor | None = None,
                 **kwargs) -> torch.LongTensor:
        """Generate from the processor's prompts; returns only the new tokens [B, T_new] (with
        `return_dict_in_generate`, transformers' output with those as `sequences`, and with
        `output_logits` each step's logits).

        images / pixel_values: the processor's packed patches; image_grid_thw (or image_sizes holding it).
        `pruning` sets the method, K (at most K merged tokens per image) and the position mode;
        `vision_signals` (from `vision_signals()`) reuses one ViT run across budgets. After the
        call `self.last_multimodal` holds per image `token_counts`, `unpruned_counts`, `budgets`, kept
        indices (raster order of the merged grid) and `grids`. `texts` is accepted for the runner and
        unused (the one method that reads it is refused here).
        """
        kwargs.pop("mm_token_type_ids", None)
        kwargs.pop("truncate_prompts", None)  # the runner's keyword; prompts are never cut here
        ids = inputs if inputs is not None else input_ids
        pixels = images if images is not None else pixel_values
        mm, deep = self.prepare_multimodal_inputs(ids, attention_mask, pixels, qwen_layout.grid_from(image_grid_thw, image_sizes, FAMILY),
                                                  visual_token_num, pruning, vision_signals)
        self.last_multimodal = mm.encoded
        pruner = self.in_llm_pruner(mm, pruning)
        if pruner is None:
            loop = qwen_layout.MRopeLoop(self.language_model, self.lm_head, prefill_kwargs=deep)
            return loop_generate(loop, mm.inputs_embeds, mm.attention_mask, mm.position_ids, self.generation_config,
                                 **kwargs)
        # the loop drops tokens; each keeps its M-RoPE ids [3, B, T] and its DeepStack features (by origin)
        loop = LLMLoop(self.language_model, self.lm_head, pruner, after_layer=deepstack_residuals(mm, deep))
        out = loop_generate(loop, mm.inputs_embeds, mm.attention_mask, mm.position_ids, self.generation_config,
                            **kwargs)
        mm.encoded.kept_indices = list(pruner.kept)
        mm.encoded.in_llm = pruner.report()
        return out

    def in_llm_pruner(self, mm: MultimodalInputs, pruning: PruningConfig | None = None):
        """The token dropper of an in-LLM method (fastv, dart, ...) for this batch, or None (nothing to prune).

        Methods that renumber positions or add tokens (pdrop's default, sparsevlm) are refused: the M-RoPE
        positions are kept, and an added token would have no DeepStack features."""
        if mm.encoded is None:
            return None
        cfg = self._pruning(pruning)
        pruner = make_dropper(cfg, mm.image_spans, mm.encoded.budgets, self.config.num_hidden_layers)
        if pruner is None:
            return None
        qwen_layout.refuse_renumbering(pruner, cfg.method, FAMILY)
        if hasattr(pruner, "inserted"):
            raise ValueError(f"pruning method {cfg.method!r} adds tokens inside the LLM, which {FAMILY} does not "
                             "support yet (an added token has no DeepStack features); use fastv, dart, fitprune or "
                             "pdrop with positions=keep")
        return pruner
