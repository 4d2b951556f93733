"""Qwen3-VL on the platform: the ViT adapter, selection on merged tokens, DeepStack, M-RoPE, the stock text model.

    pixel_values [P, C*T*p*p] + image_grid_thw [n, 3]
      --ViT adapter (stock blocks, probe signals)--> per image: M_i merged units [M_i, 4D], DeepStack
        units per layer, signals summed over each 2 x 2 group
      --selector (registry method, K_i = PruningConfig.budget(M_i))--> kept units (sorted)
      --patch merger and DeepStack mergers on the kept units only--> [K_i, H] and L x [K_i, H]
      --layout: the processor's image-pad runs shrink to the kept tokens; every kept token keeps
        the (t, h, w) position the unpruned model gives it (the stock `get_rope_index`), and the
        text after the image keeps its unpruned positions--> inputs_embeds, mask, [3, B, L'] positions,
        the visual-position mask and the DeepStack features of the kept tokens
      --Qwen3VLTextModel's own forward (it adds the DeepStack features after its first layers at the
        visual positions), then the LM head--> logits; decoding continues each row's positions.

Nothing here subclasses or patches transformers: the parts are the ones `Qwen3VLForConditionalGeneration`
loads, composed side by side, and the text model is called through `llava.compat`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava import compat
from llava.pruning import get_method
from llava.pruning.base import SIGNAL_PROJECTED, SIGNAL_TEXT_RELEVANCE
from llava.pruning.config import PruningConfig

from .llava_arch import FROM_PRUNING, EncodedImages, LlavaMetaForCausalLM, VisualTokenNum, expand_budgets, \
    tower_needs
from .llm_loop import generate as loop_generate

FAMILY = "qwen3-vl"


@dataclass(frozen=True)
class QwenTokens:
    """The checkpoint's placeholder tokens."""

    image_token_id: int
    video_token_id: int

    @classmethod
    def from_config(cls, config) -> "QwenTokens":
        return cls(int(config.image_token_id), int(config.video_token_id))


@dataclass
class QwenInputs:
    """What the text model receives (left-padded rows).

    inputs_embeds [B, L, H]; attention_mask [B, L]; position_ids [3, B, L] (t, h, w); next_position [B, 1]:
    the unpruned layout's first free position per row (where decoding continues); visual_pos_masks [B, L]
    bool; deepstack: per DeepStack layer [V, H], the kept visual tokens in row-major order.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    next_position: torch.Tensor
    visual_pos_masks: torch.Tensor | None
    deepstack: list[torch.Tensor] | None
    encoded: EncodedImages | None = None
    kept_positions: list[torch.Tensor] = field(default_factory=list)  # per row: [3, L_b] positions of its tokens


def image_type_ids(input_ids: torch.Tensor, tokens: QwenTokens) -> torch.Tensor:
    """The processor's `mm_token_type_ids` from the ids: 1 at image pads, 0 elsewhere (videos are refused)."""
    if (input_ids == tokens.video_token_id).any():
        raise ValueError(f"{FAMILY}: the prompts hold video tokens; videos are not supported on this family yet")
    return (input_ids == tokens.image_token_id).long()


def unpruned_positions(rope_index: Callable, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       grid_thw: torch.Tensor | None, tokens: QwenTokens) -> tuple[torch.Tensor, torch.Tensor]:
    """The unpruned model's M-RoPE positions [3, B, L] and each row's next free position [B, 1].

    rope_index: the stock `Qwen3VLModel.get_rope_index` (padding gets position 0, as there).
    """
    types = image_type_ids(input_ids, tokens)
    if grid_thw is None or not types.any():
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, L]
        pos = pos.masked_fill(attention_mask == 0, 0)[None].expand(3, -1, -1)
    else:
        pos, _ = rope_index(input_ids, mm_token_type_ids=types, image_grid_thw=grid_thw, attention_mask=attention_mask)
    nxt = pos.masked_fill(~attention_mask.bool()[None], -1).amax(dim=(0, 2))[:, None] + 1  # [B, 1]
    return pos, nxt


def build_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, embed: nn.Module,
                 positions: torch.Tensor, next_position: torch.Tensor, encoded: EncodedImages | None,
                 deepstack: list[list[torch.Tensor]] | None, tokens: QwenTokens, compact: bool = False) -> QwenInputs:
    """The processor's prompts with each image-pad run replaced by that image's kept tokens.

    input_ids [B, L] (runs of `image_token_id`, one per image, N_i long); positions [3, B, L] (unpruned);
    encoded.features n_img x [K_i, H] and kept_indices (None: all); deepstack n_img x (layers x [K_i, H]).
    compact: renumber the positions after each cut (see `compact_positions`). Rows come back left-padded.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    valid = attention_mask.bool()
    text = embed(input_ids)  # [B, L, H]
    check_image_runs(input_ids, valid, encoded.unpruned_counts if encoded is not None else [], tokens)
    rows, image = [], 0
    for b in range(input_ids.shape[0]):
        ids, emb, pos = input_ids[b][valid[b]], text[b][valid[b]], positions[:, b][:, valid[b]]
        is_img = ids == tokens.image_token_id
        keep = torch.ones_like(is_img)
        emb = emb.clone()
        row_deep = []
        for s, run in image_runs(ids, tokens.image_token_id):
            kept = encoded.kept_indices[image]
            if kept is not None:
                keep[s:s + run] = False
                keep[s + kept.to(keep.device)] = True
            slots = s + (torch.arange(run, device=emb.device) if kept is None else kept.to(emb.device))
            emb[slots] = encoded.features[image].to(emb)
            if deepstack is not None:
                row_deep.append(deepstack[image])
            image += 1
        pos = pos[:, keep]
        if compact:
            pos = compact_positions(pos, is_img[keep])
        rows.append((emb[keep], pos, is_img[keep], row_deep))
    width = max(len(r[0]) for r in rows)
    batch, hidden = len(rows), text.shape[-1]
    embeds = text.new_zeros(batch, width, hidden)
    mask = torch.zeros(batch, width, dtype=torch.long, device=text.device)
    pos_out = positions.new_zeros(3, batch, width)
    visual = torch.zeros(batch, width, dtype=torch.bool, device=text.device)
    for b, (emb, pos, vis, _) in enumerate(rows):
        n = len(emb)
        embeds[b, width - n:], mask[b, width - n:], pos_out[:, b, width - n:], visual[b, width - n:] = emb, 1, pos, vis
    deep = None
    if deepstack is not None and visual.any():
        layers = len(deepstack[0])
        deep = [torch.cat([d[j] for r in rows for d in r[3]]).to(text) for j in range(layers)]  # [V, H] row-major
    nxt = next_position
    if compact:
        nxt = torch.stack([r[1].max() for r in rows])[:, None] + 1
    return QwenInputs(embeds, mask, pos_out, nxt, visual if deep is not None else None, deep, encoded,
                      [r[1] for r in rows])


def image_runs(ids: torch.Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """(start, length) of each run of `image_token_id` in one row of ids [L]."""
    is_img = ids == image_token_id
    starts = torch.nonzero(is_img & ~torch.cat([is_img.new_zeros(1), is_img[:-1]])).flatten().tolist()
    return [(s, int(is_img[s:].int().cumprod(0).sum())) for s in starts]


def check_image_runs(input_ids: torch.Tensor, valid: torch.Tensor, counts: Sequence[int], tokens: QwenTokens) -> None:
    """Each image-pad run (in reading order) must be as long as its image's merged grid, one run per image."""
    image = 0
    for b in range(input_ids.shape[0]):
        for _, run in image_runs(input_ids[b][valid[b].bool()], tokens.image_token_id):
            if image >= len(counts):
                raise ValueError(f"prompt {b}: holds more image-pad runs than the {len(counts)} images given")
            if run != counts[image]:
                raise ValueError(f"prompt {b}: an image-pad run holds {run} tokens but image {image}'s grid gives "
                                 f"{counts[image]}; build the prompt with this checkpoint's processor")
            image += 1
    if image != len(counts):
        raise ValueError(f"the prompts hold {image} image-pad runs but {len(counts)} images were given")


def compact_positions(pos: torch.Tensor, is_image: torch.Tensor) -> torch.Tensor:
    """Compact option: the row's positions [3, L] renumbered so that no gap remains after a cut.

    Each image's kept tokens keep their (t, h, w) offsets relative to the image's start; text
    tokens take consecutive positions after the previous token's largest position. Without
    pruning this gives the unpruned layout.
    """
    out = pos.clone()
    prev_max, i, n = -1, 0, pos.shape[1]
    while i < n:
        j = i
        while j < n and bool(is_image[j]) == bool(is_image[i]):
            j += 1
        block = pos[:, i:j]
        if bool(is_image[i]):
            start = block[0].min()  # the image's t position is its start
            out[:, i:j] = block - start + prev_max + 1
            prev_max = int(out[:, i:j].max())
        else:
            out[:, i:j] = torch.arange(prev_max + 1, prev_max + 1 + j - i, device=pos.device).expand(3, -1)
            prev_max += j - i
        i = j
    return out


class DeepStackLoop:
    """Prefill and decode steps through the stock Qwen3-VL text model (with its DeepStack injection).

    The prefill hands the text model the visual-position mask and the DeepStack features; each decode
    step continues every row's positions from `next_position` (all three axes alike) and extends the
    attention mask. Same interface as `llava.model.llm_loop.LLMLoop` (`prefill`, `step`, `embed`), so
    `llm_loop.generate` decodes with it.
    """

    dropper = None

    def __init__(self, text_model: nn.Module, lm_head: nn.Module, visual_pos_masks: torch.Tensor | None = None,
                 deepstack: list[torch.Tensor] | None = None, next_position: torch.Tensor | None = None) -> None:
        compat.check_deepstack_kwargs(text_model)
        self.model, self.lm_head, self.config = text_model, lm_head, text_model.config
        self.embed = text_model.get_input_embeddings()
        self.visual_pos_masks, self.deepstack = visual_pos_masks, deepstack
        self.next_position = next_position
        self.cache = compat.new_cache(self.config)
        self.mask: torch.Tensor | None = None

    @torch.no_grad()
    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        """inputs_embeds [B, T, H] (left-padded), attention_mask [B, T], position_ids [3, B, T] -> last logits [B, V]."""
        out = compat.call_text_model(self.model, cache=self.cache, inputs_embeds=inputs_embeds,
                                     attention_mask=attention_mask, position_ids=position_ids,
                                     visual_pos_masks=self.visual_pos_masks, deepstack_visual_embeds=self.deepstack)
        self.mask = attention_mask
        if self.next_position is None:
            self.next_position = position_ids.masked_fill(~attention_mask.bool()[None], -1).amax(dim=(0, 2))[:, None] + 1
        return self.lm_head(out.last_hidden_state[:, -1])  # already normed: [B, H] -> [B, V]

    @torch.no_grad()
    def step(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """One decode step for every row: token_embeds [B, 1, H] -> logits [B, V]."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        pos = self.next_position[None].expand(3, -1, -1)  # [3, B, 1]
        out = compat.call_text_model(self.model, cache=self.cache, inputs_embeds=token_embeds, attention_mask=self.mask,
                                     position_ids=pos)
        self.next_position = self.next_position + 1
        return self.lm_head(out.last_hidden_state[:, -1])


class Qwen3VLForPruning(nn.Module, LlavaMetaForCausalLM):
    """Qwen3-VL composed of its loaded parts, with pre-LLM pruning on merged tokens.

    vision_tower: the ViT adapter (`Qwen3VLVisionTower`); language_model: the stock `Qwen3VLTextModel`;
    lm_head: its output projection; rope_index: the stock `Qwen3VLModel.get_rope_index`.
    `config` is the text model's config (the LLM's, as on the other families).
    """

    def __init__(self, config, vision_tower: nn.Module, language_model: nn.Module, lm_head: nn.Module,
                 rope_index: Callable, generation_config=None) -> None:
        super().__init__()
        self.vision_tower = vision_tower
        self.language_model = language_model
        self.llm_head = lm_head
        self.config = language_model.config
        self.tokens = QwenTokens.from_config(config)
        self._rope_index = rope_index
        self._generation_config = generation_config
        self.pruning = PruningConfig()
        self.last_multimodal: EncodedImages | None = None
        compat.check_deepstack_kwargs(language_model)

    # ---- parts ------------------------------------------------------------------------------------
    def get_vision_tower(self) -> nn.Module:
        return self.vision_tower

    def get_model(self) -> nn.Module:
        return self.language_model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings()

    @property
    def lm_head(self) -> nn.Module:
        return self.llm_head

    @property
    def mm_projector(self) -> nn.Module:
        """The patch merger: Qwen's projector."""
        return self.vision_tower.vision_tower.merger

    @property
    def generation_config(self):
        return self._generation_config

    @property
    def dtype(self) -> torch.dtype:
        return self.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.get_input_embeddings().weight.device

    # ---- images -> kept tokens --------------------------------------------------------------------
    @torch.no_grad()
    def encode_qwen_images(self, images: torch.Tensor, grid_thw: torch.Tensor,
                           visual_token_num: VisualTokenNum = FROM_PRUNING,
                           pruning: PruningConfig | None = None) -> tuple[EncodedImages, list[list[torch.Tensor]]]:
        """Encode, select on merged tokens, and merge the kept ones: -> (EncodedImages, per image its DeepStack
        features, layers x [K_i, H]). K_i = PruningConfig.budget(M_i) unless `visual_token_num` overrides it."""
        cfg = self._pruning(pruning)
        method = get_method(cfg.method)
        grid_thw = torch.as_tensor(grid_thw)
        tower = self.get_vision_tower()
        counts = (grid_thw.prod(dim=-1) // tower.merge_unit).tolist()
        if visual_token_num == FROM_PRUNING:
            budgets = [cfg.budget(n) for n in counts]
        else:
            budgets = expand_budgets(visual_token_num, len(counts))
        prune = [k is not None and k < n for k, n in zip(budgets, counts)]
        if method.stage == "in_llm" and any(k is not None for k in budgets):
            raise ValueError(f"pruning method {method.name!r} cannot run on {FAMILY} yet: in-LLM methods need the "
                             "LLM loop, which does not inject DeepStack features; use a pre-LLM method")
        needs = method.needs if any(prune) else frozenset()
        if SIGNAL_TEXT_RELEVANCE in needs:
            raise ValueError(f"pruning method {method.name!r} cannot run on {FAMILY}: signal 'text_relevance' scores "
                             "patches against the question with CLIP's text tower, which a Qwen3-VL checkpoint does "
                             "not ship")
        try:
            outs = tower(images, grid_thw, needs=tower_needs(needs))
        except ValueError as err:
            if type(err).__name__ != "MissingSignalError":
                raise
            raise ValueError(f"pruning method {method.name!r} cannot run on {FAMILY}: {err}") from None
        dtype = next(tower.vision_tower.merger.parameters()).dtype
        features, kept_all, deep_all = [], [], []
        for img, k, p in zip(outs, budgets, prune):
            groups = img.signals.features[0].to(dtype)  # [M, U*D]
            if not p:
                features.append(tower.merge(groups))
                deep_all.append(tower.merge_deepstack([d.to(dtype) for d in img.deepstack]))
                kept_all.append(None)
                continue
            sig = img.signals
            merged_all = None
            if SIGNAL_PROJECTED in needs:  # DivPrune selects on the LLM-input tokens: merge them all first
                merged_all = tower.merge(groups)
                sig = sig.with_values(projected=merged_all[None])
            selection = method.select(sig, k, **cfg.args)
            if selection.tokens is not None:
                raise ValueError(f"pruning method {method.name!r} cannot run on {FAMILY}: it makes new tokens, which "
                                 "have no DeepStack features; use a selecting method")
            kept = selection.indices[0]  # [K] sorted merged-token indices
            at = kept.to(groups.device)
            features.append(merged_all[at] if merged_all is not None else tower.merge(groups[at]))
            deep_all.append(tower.merge_deepstack([d[at].to(dtype) for d in img.deepstack]))
            kept_all.append(kept)
        encoded = EncodedImages(features=features, kept_indices=kept_all, num_patches=max(counts, default=0),
                                budgets=budgets, unpruned_counts=counts)
        return encoded, deep_all

    def prepare_qwen_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                            images: torch.Tensor | None, image_grid_thw: torch.Tensor | None,
                            visual_token_num: VisualTokenNum = FROM_PRUNING, pruning: PruningConfig | None = None,
                            compact_positions: bool = False) -> QwenInputs:
        """Processor outputs -> what the text model receives (encoding and pruning the images on the way)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        if images is not None and image_grid_thw is None:
            raise ValueError(f"{FAMILY}: images need image_grid_thw (the processor returns it with pixel_values)")
        encoded, deep = None, None
        if images is not None:
            encoded, deep = self.encode_qwen_images(images, image_grid_thw, visual_token_num, pruning)
        elif (input_ids == self.tokens.image_token_id).any():
            raise ValueError(f"{FAMILY}: the prompts hold image-pad tokens but no images were given")
        grid = None if image_grid_thw is None else torch.as_tensor(image_grid_thw).to(self.device)
        check_image_runs(input_ids, attention_mask, encoded.unpruned_counts if encoded is not None else [], self.tokens)
        pos, nxt = unpruned_positions(self._rope_index, input_ids, attention_mask, grid, self.tokens)
        return build_inputs(input_ids, attention_mask, self.get_input_embeddings(), pos, nxt, encoded, deep,
                            self.tokens, compact=compact_positions)

    # ---- forward / generate -----------------------------------------------------------------------
    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                images: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                visual_token_num: VisualTokenNum = FROM_PRUNING, pruning: PruningConfig | None = None,
                compact_positions: bool = False, **kwargs) -> CausalLMOutputWithPast:
        """Logits [B, L', V] for the processor's prompts (rows left-padded after the image runs shrink).

        images: the processor's `pixel_values` [P, C*T*p*p]; image_grid_thw [n, 3]. `mm_token_type_ids`
        may be passed and is recomputed from the ids.
        """
        kwargs.pop("mm_token_type_ids", None)
        if kwargs:
            raise ValueError(f"{FAMILY}: forward() does not take {sorted(kwargs)}")
        inputs = self.prepare_qwen_inputs(input_ids, attention_mask, images, image_grid_thw, visual_token_num,
                                          pruning, compact_positions)
        self.last_multimodal = inputs.encoded
        with torch.no_grad():
            out = compat.call_text_model(self.language_model, cache=None, inputs_embeds=inputs.inputs_embeds,
                                         attention_mask=inputs.attention_mask, position_ids=inputs.position_ids,
                                         visual_pos_masks=inputs.visual_pos_masks,
                                         deepstack_visual_embeds=inputs.deepstack)
        return CausalLMOutputWithPast(logits=self.lm_head(out.last_hidden_state))

    @torch.no_grad()
    def generate(self, inputs: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                 images: torch.Tensor | None = None, image_grid_thw: torch.Tensor | None = None,
                 visual_token_num: VisualTokenNum = FROM_PRUNING, pruning: PruningConfig | None = None,
                 compact_positions: bool = False, image_sizes: Sequence | None = None, **kwargs) -> torch.LongTensor:
        """Generate from the processor's prompts; returns only the new tokens [B, T_new].

        images: the processor's `pixel_values`; image_grid_thw [n, 3] (also accepted as `image_sizes`, so
        callers written for OneVision's keywords work). After the call `self.last_multimodal` holds each
        image's token count, unpruned count N_i, budget K_i and kept merged-token indices.
        """
        kwargs.pop("mm_token_type_ids", None)
        kwargs.pop("texts", None)  # question texts: only question-aware methods read them, and they are refused here
        if image_grid_thw is None and image_sizes is not None:
            image_grid_thw = torch.as_tensor(image_sizes)
        mm = self.prepare_qwen_inputs(inputs, attention_mask, images, image_grid_thw, visual_token_num, pruning,
                                      compact_positions)
        self.last_multimodal = mm.encoded
        loop = DeepStackLoop(self.language_model, self.lm_head, mm.visual_pos_masks, mm.deepstack, mm.next_position)
        return loop_generate(loop, mm.inputs_embeds, mm.attention_mask, mm.position_ids, self.generation_config,
                             **kwargs)
