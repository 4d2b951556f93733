"""LLaVA's multimodal glue: encode images (with pruning), project kept tokens, splice them into prompts.

The path of a batch:
  images [n_img, 3, S, S] --vision tower--> VisionSignals (features [n_img, N, D] + signals)
        --selector--> kept indices [n_img, K] (K may differ per image)
        --mm_projector on the kept tokens only--> n_img x [K_i, H]
  input_ids [B, L] with IMAGE_TOKEN_INDEX placeholders --splice--> inputs_embeds [B, L', H],
        attention_mask [B, L'], position_ids [B, L'] (left or right padded), labels [B, L'].
"""

from __future__ import annotations

import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.pruning import get_method
from llava.pruning.base import SIGNAL_PROJECTED, SIGNAL_TEXT_RELEVANCE, VisionSignals, gather_tokens
from llava.pruning.config import PruningConfig, check_visual_token_num
from llava.pruning.signals import hand_over_stand_in, signal_spec, stand_in_needs, stand_in_option

from .splice import MultimodalInputs

VisualTokenNum = int | None | Sequence[int | None]
# Default of the `visual_token_num` overrides: take K (or the ratio) from the call's PruningConfig.
FROM_PRUNING = "pruning"


def _from_pruning(visual_token_num) -> bool:
    return isinstance(visual_token_num, str) and visual_token_num == FROM_PRUNING


def expand_budgets(visual_token_num: VisualTokenNum, num_images: int) -> list[int | None]:
    """One validated K per image from a scalar or a per-image sequence."""
    if visual_token_num is None or isinstance(visual_token_num, (numbers.Number, bool, str)):
        return [check_visual_token_num(visual_token_num)] * num_images
    budgets = [check_visual_token_num(k) for k in visual_token_num]
    if len(budgets) != num_images:
        raise ValueError(f"got {len(budgets)} visual_token_num values for {num_images} images")
    return budgets


def tower_needs(needs: frozenset[str]) -> frozenset[str]:
    """The signals of `needs` that the vision tower computes (the model fills in `projected` and
    `text_relevance` itself)."""
    return frozenset(n for n in needs if signal_spec(n).fn is not None)


def run_tower(tower, images: torch.Tensor, needs: frozenset[str], pruning: PruningConfig) -> VisionSignals:
    """The tower on `images` for the tower-computed signals of `needs`.

    A `cls_stand_in` named in the method's options (`--pruning-args cls_stand_in=feature_norm`) is
    computed instead of the [CLS] row and handed over as `cls_attn`; 'auto' leaves the choice to the
    tower (CLIP: its [CLS] row; SigLIP: its load-time default).
    """
    computed = tower_needs(needs)
    stand_in = stand_in_option(pruning.args)
    signals = tower(images, needs=stand_in_needs(computed, stand_in))
    if stand_in is None:
        return signals
    return VisionSignals(signals.features, **hand_over_stand_in(signals.values, computed, stand_in))


def add_projected(signals: VisionSignals, projector, needs: frozenset[str]) -> VisionSignals:
    """`signals` with the `projected` signal ([B, N, H]: every patch through the projector) when `needs` names it.

    DivPrune measures the LLM-input embeddings, so its candidates are all projected before selection.
    """
    if SIGNAL_PROJECTED not in needs or signals.projected is not None:
        return signals
    weight = next(projector.parameters(), None)
    dtype = weight.dtype if weight is not None else signals.features.dtype
    return signals.with_values(projected=projector(signals.features.to(dtype)))  # [B, N, D] -> [B, N, H]


def add_text_relevance(signals: VisionSignals, tower, text_tower, needs: frozenset[str],
                       texts: Sequence[str] | None, method: str = "") -> VisionSignals:
    """`signals` with `text_relevance` ([B, N]: each patch against its image's question) when `needs` names it.

    texts: one question per image row of `signals` (CDPruner's relevance); the signal depends on the
    question, so it is computed here, per call, never cached with the vision pass.
    """
    if SIGNAL_TEXT_RELEVANCE not in needs:
        return signals
    if texts is None:
        if signals.text_relevance is not None:
            return signals
        raise ValueError(f"pruning method {method!r} scores patches against the question: pass the question text "
                         "(generate(..., texts=[question per prompt row]))")
    if text_tower is None:
        raise ValueError(f"pruning method {method!r} needs the CLIP text tower: load the model with it "
                         f"(load_pretrained_model(..., pruning_method={method!r})) or call model.load_text_tower()")
    if len(texts) != signals.features.shape[0]:
        raise ValueError(f"got {len(texts)} question texts for {signals.features.shape[0]} image rows")
    post_layernorm = tower.vision_tower.post_layernorm
    return signals.with_values(text_relevance=text_tower.relevance(post_layernorm, signals.features, texts))


def texts_per_image(texts: str | Sequence[str] | None, input_ids: torch.Tensor) -> list[str] | None:
    """One question per prompt row (or one for all rows) -> one per <image> placeholder, in reading order."""
    if texts is None:
        return None
    if isinstance(texts, str):
        texts = [texts] * input_ids.shape[0]
    if len(texts) != input_ids.shape[0]:
        raise ValueError(f"got {len(texts)} question texts for {input_ids.shape[0]} prompt rows (texts= takes one "
                         "per row)")
    counts = (input_ids == IMAGE_TOKEN_INDEX).sum(dim=1).tolist()
    return [text for text, n in zip(texts, counts) for _ in range(n)]


@dataclass
class EncodedImages:
    """Projected visual tokens per image and what was kept.

    features: n_img x [K_i, H]; kept_indices: n_img x ([M_i] long raster positions, or None when all kept).
    M_i = K_i except for tokens that stand at no patch (VisionZip's [CLS] token: M_i = K_i - 1).
    """

    features: list[torch.Tensor]
    kept_indices: list[torch.Tensor | None]
    num_patches: int
    budgets: list[int | None] = field(default_factory=list)  # the K asked for, per image
    # in-LLM methods: {"layer", "kept_after_layer", "layer_averaged"}, staged ones also "layers", "kept_per_stage"
    in_llm: dict | None = None
    # the tokens each image gives the unpruned LLM, N_i (576 for LLaVA-1.5; anyres and OneVision: per image)
    unpruned_counts: list[int] | None = None
    # families whose candidates form one grid per image (Qwen-VL's merged grid): its (rows, cols) per image
    grids: list[tuple[int, int]] | None = None
    # position_mode="keep" (1-D layouts): per image, (length of its block in the unpruned LLM, each of its
    # K_i tokens' offset in that block [K_i] long, -1 for a token at no slot; None: the whole block in order)
    unpruned_slots: list[tuple[int, torch.Tensor | None]] | None = None

    @property
    def token_counts(self) -> list[int]:
        return [f.shape[0] for f in self.features]


class LlavaMetaForCausalLM:
    """The glue of a multimodal LLM (`LlavaForPruning`): encode, select, project and splice.

    The host provides `config`, `get_vision_tower()`, `mm_projector`, `image_newline` (NeXT),
    `get_input_embeddings()` and `splice` (a `llava.model.splice` function).
    """

    # The model's default pruning value; calls and `pruning_config` blocks may pass another.
    pruning: PruningConfig = PruningConfig()
    # CLIP's text half (`clip_text.CLIPTextTower`), loaded only for methods that read the question
    # (CDPruner); held beside the model, not as a submodule, so it is never saved with it.
    text_tower = None
    # A family's own image path (LLaVA-OneVision), or None for LLaVA's: called as
    # family_inputs(model, input_ids, attention_mask, images, image_sizes, visual_token_num, pruning, signals)
    # -> (input_ids with IMAGE_TOKEN_INDEX sentinels, attention_mask, EncodedImages).
    family_inputs = None

    # ---- configuration ----------------------------------------------------------------------
    def set_pruning(
        self,
        visual_token_num: int | None = None,
        method: str | None = None,
        method_args: dict | str | None = None,
        anyres_mode: str | None = None,
        *,
        ratio: float | None = None,
        keep_ratio: float | None = None,
    ) -> PruningConfig:
        """Set the model's default PruningConfig (`self.pruning`) and return it.

        visual_token_num: K (None = no pruning), or give `ratio` (reduction) or `keep_ratio` (kept
        fraction) instead. method, method_args and anyres_mode keep their current values when None; switching to another method without
        method_args drops the previous method's args. anyres_mode ('faithful' or 'paper') chooses how
        LLaVA-NeXT images are pruned (see `encode_anyres_images`); 'paper' also changes their
        preprocessing (`process_images(..., anyres_mode='paper')`, fixed 2x2 grid).
        """
        current = self.pruning
        if method is not None and method != current.method and method_args is None:
            method_args = ()
        changes = dict(visual_token_num=visual_token_num, ratio=ratio, keep_ratio=keep_ratio)
        if method is not None:
            changes["method"] = method
        if method_args is not None:
            changes["method_args"] = method_args
        if anyres_mode is not None:
            changes["anyres_mode"] = anyres_mode
        self.pruning = PruningConfig(**{**vars(current), **changes})
        return self.pruning

    @contextmanager
    def pruning_config(self, pruning: PruningConfig) -> Iterator[PruningConfig]:
        """Use `pruning` as the model's default inside the block; the previous value comes back on exit."""
        if not isinstance(pruning, PruningConfig):
            raise TypeError(f"pruning_config() takes a PruningConfig, got {type(pruning).__name__}")
        previous = self.pruning
        self.pruning = pruning
        try:
            yield pruning
        finally:
            self.pruning = previous

    def _pruning(self, pruning: PruningConfig | None) -> PruningConfig:
        """The value a call uses: its own, else the model's default."""
        if pruning is None:
            return self.pruning
        if not isinstance(pruning, PruningConfig):
            raise TypeError(f"pruning= takes a PruningConfig, got {type(pruning).__name__}")
        return pruning

    def load_text_tower(self, path: str | None = None):
        """Load CLIP's text tower from `path` (default: the vision tower's folder) for question-aware methods."""
        from .multimodal_encoder.clip_text import load_clip_text_tower

        tower = self.get_vision_tower()
        self.text_tower = load_clip_text_tower(path or tower.vision_tower_name, device=tower.device)
        return self.text_tower

    # ---- images -> visual tokens --------------------------------------------------------------
    def pruning_needs(self, pruning: PruningConfig | None = None) -> frozenset[str]:
        """The vision signals the method of `pruning` (default: the model's) asks the tower for."""
        method = get_method(self._pruning(pruning).method)
        return method.needs if method.stage == "pre_llm" else frozenset()

    @torch.no_grad()
    def vision_signals(
        self, images: torch.Tensor, needs: frozenset[str] | None = None, pruning: PruningConfig | None = None
    ) -> VisionSignals:
        """Run the vision tower once: images [n_img, 3, S, S] -> VisionSignals (reusable across budgets)."""
        if not torch.is_tensor(images):
            images = torch.cat([im if im.ndim == 4 else im[None] for im in images])  # anyres: all views
        elif images.ndim == 5:
            images = images.flatten(0, 1)
        needs = self.pruning_needs(pruning) if needs is None else frozenset(needs)
        signals = run_tower(self.get_vision_tower(), images, needs, self._pruning(pruning))
        return add_projected(signals, self.mm_projector, needs)

    @torch.no_grad()
    def encode_images(
        self,
        images: torch.Tensor | None,
        visual_token_num: VisualTokenNum = FROM_PRUNING,
        signals: VisionSignals | None = None,
        pruning: PruningConfig | None = None,
        texts: Sequence[str] | None = None,
    ) -> EncodedImages:
        """Encode, select and project. images [n_img, 3, S, S] -> EncodedImages (n_img x [K_i, H]).

        `pruning` (default: the model's) gives the method and the budget; `visual_token_num`
        overrides its budget, per image if a list. `signals` from `vision_signals()` skips the tower
        (a K sweep encodes each image once); they must hold what the method needs. `texts`: the
        question of each image, for methods that read it (CDPruner).
        """
        cfg = self._pruning(pruning)
        n_images = signals.features.shape[0] if signals is not None else images.shape[0]
        tower = self.get_vision_tower()
        method = get_method(cfg.method)
        n = tower.num_patches + (1 if tower.select_feature == "cls_patch" else 0)
        if _from_pruning(visual_token_num):
            visual_token_num = cfg.budget(n)
        budgets = expand_budgets(visual_token_num, n_images)
        prune = [k is not None and k < n for k in budgets]
        if any(prune) and tower.select_feature != "patch":
            raise ValueError("pruning needs mm_vision_select_feature='patch' (no LLaVA-1.5/1.6 checkpoint uses 'cls_patch')")
        if method.stage == "in_llm":  # all tokens enter the LLM; the method prunes inside it
            prune = [False] * len(budgets)
        needs = method.needs if any(prune) else frozenset()
        if signals is None:
            signals = run_tower(tower, images, needs, cfg)
        projector = self.mm_projector
        signals = add_projected(signals, projector, needs)
        signals = add_text_relevance(signals, tower, self.text_tower, needs, texts, method.name)
        weight = next(projector.parameters(), None)
        proj_dtype = weight.dtype if weight is not None else signals.features.dtype
        method_args = cfg.args

        features: list[torch.Tensor | None] = [None] * len(budgets)
        kept: list[torch.Tensor | None] = [None] * len(budgets)
        slots: list[tuple[int, torch.Tensor | None]] = [(n, None)] * len(budgets)
        for k in sorted({k for k, p in zip(budgets, prune) if p}):
            rows = [i for i, (kk, p) in enumerate(zip(budgets, prune)) if p and kk == k]
            sub = signals.index(rows)
            selection = method.select(sub, k, **method_args)
            if selection.tokens is None and sub.projected is not None:  # already projected (DivPrune)
                projected = gather_tokens(sub.projected, selection.indices)  # [b, N, H] -> [b, K, H]
            else:
                tokens = selection.tokens if selection.tokens is not None else gather_tokens(sub.features,
                                                                                            selection.indices)
                projected = projector(tokens.to(proj_dtype))  # [b, K, D] -> [b, K, H]
            for j, i in enumerate(rows):
                features[i], kept[i] = projected[j], selection.indices[j]
                # a kept patch sits at its raster index of the unpruned block; merged tokens sit at no slot
                slots[i] = (n, selection.indices[j] if selection.tokens is None else
                            torch.full((projected.shape[1],), -1, dtype=torch.long))
        full_rows = [i for i, p in enumerate(prune) if not p]
        if full_rows:
            tokens = signals.features[full_rows]
            projected = projector(tokens.to(proj_dtype))  # [b, N, D] -> [b, N, H]
            for j, i in enumerate(full_rows):
                features[i] = projected[j]
        return EncodedImages(features=features, kept_indices=kept, num_patches=n, budgets=budgets,
                             unpruned_counts=[n] * len(budgets), unpruned_slots=slots)

    # ---- LLaVA-NeXT (anyres) ----------------------------------------------------------------
    def is_anyres(self) -> bool:
        return getattr(self.config, "image_aspect_ratio", None) == "anyres"

    @torch.no_grad()
    def encode_anyres_images(
        self,
        views: torch.Tensor | None,
        image_sizes: Sequence[tuple[int, int]],
        visual_token_num: VisualTokenNum = FROM_PRUNING,
        signals: VisionSignals | None = None,
        pruning: PruningConfig | None = None,
        texts: Sequence[str] | None = None,
    ) -> EncodedImages:
        """LLaVA-NeXT images: views [sum(1 + crops), 3, S, S] (base view first per image) -> EncodedImages.

        Tokens follow the checkpoint's merge (`mm_patch_merge_type`: spatial_unpad adds unpadding and
        newline tokens). `anyres_mode` 'faithful': K is one budget per image over its base and grid
        tokens, chosen by the method on those candidates; a newline is kept for every grid row that
        keeps a token. 'paper' (FasterVLM's setting): fixed 2x2 grid, 'spatial' merge without unpad or
        newlines, and K per view (5 x K tokens). Only kept tokens are projected. A ratio resolves
        against the image's candidates ('faithful') or a view's patches ('paper'). `texts`: the question
        of each image (every view gets its image's), for methods that read it (CDPruner). In-LLM methods
        (fastv, pdrop, dart, ...) get every token; their K counts the image's whole block, newline tokens
        included ('faithful'; a ratio resolves against the block), or K per view times the views ('paper').
        """
        from llava.anyres import NEWLINE, anyres_pinpoints, grid_shape, token_layout, views_per_image

        cfg = self._pruning(pruning)
        from_ratio = _from_pruning(visual_token_num) and cfg.per_image
        if _from_pruning(visual_token_num):
            visual_token_num = cfg.visual_token_num
        budgets = expand_budgets(visual_token_num, len(image_sizes))
        tower = self.get_vision_tower()
        method = get_method(cfg.method)
        in_llm = method.stage == "in_llm"  # every token enters the LLM; the method prunes the image's block there
        prunes = from_ratio or any(k is not None for k in budgets)
        if in_llm and prunes and not getattr(method.llm_pruner, "supports_anyres", True):
            name = getattr(self.config, "_name_or_path", "") or "this LLaVA-NeXT model"
            raise ValueError(f"pruning method {method.name!r} cannot run on anyres (LLaVA-NeXT) images of {name}; "
                             f"use a LLaVA-1.5 checkpoint or another method")
        crop = tower.config.image_size
        paper = cfg.anyres_mode == "paper"
        pinpoints = anyres_pinpoints(self.config, crop, cfg.anyres_mode)
        counts = [views_per_image(tuple(size), pinpoints, crop) for size in image_sizes]
        needs = method.needs if prunes and not in_llm else frozenset()
        if signals is None:
            if views.shape[0] != sum(counts):
                raise ValueError(f"expected {sum(counts)} anyres views for image sizes {list(image_sizes)}, "
                                 f"got {views.shape[0]}")
            signals = run_tower(tower, views, needs, cfg)  # [V, N, D] for all views at once
        signals = add_projected(signals, self.mm_projector, needs)
        if texts is not None:
            texts = [text for text, n in zip(texts, counts) for _ in range(n)]  # per image -> per view
        signals = add_text_relevance(signals, tower, self.text_tower, needs, texts, method.name)
        merge = getattr(self.config, "mm_patch_merge_type", "flat")
        unpad = "unpad" in merge and not paper
        side = tower.num_patches_per_side
        projector = self.mm_projector
        dtype = next(projector.parameters()).dtype
        method_args = cfg.args

        features, kept_slots, unpruned, slots = [], [], [], []
        start = 0
        for i, (size, n_views, k) in enumerate(zip(image_sizes, counts, budgets)):
            size = tuple(size)
            view_sig = signals.index(slice(start, start + n_views))
            start += n_views
            n_crops = n_views - 1
            if merge == "flat" and not paper:
                layout = token_layout(0, side, None, None, False, False)
                layout.crop = torch.arange(n_views).repeat_interleave(side * side)
                layout.patch = torch.arange(side * side).repeat(n_views)
                layout.row = torch.full_like(layout.crop, -1)
            else:
                grid = grid_shape(size, pinpoints, crop) if n_crops else None
                layout = token_layout(n_crops, side, grid, size, unpad, unpad)
            is_token = layout.crop != NEWLINE
            slot_ids = torch.nonzero(is_token).flatten()
            unpruned.append(len(layout))  # the image's block in the unpruned LLM, newlines included
            if from_ratio:  # K per view in 'paper' mode, per image over its candidates otherwise
                k = budgets[i] = cfg.budget(side * side if paper else len(slot_ids if not in_llm else layout))
            if in_llm:  # K over the image's whole block (newline tokens included); 'paper': K per view
                budgets[i] = None if k is None else k * n_views if paper else k
                k = None
            keep_slots, merged, extra = self._select_anyres(
                method, method_args, view_sig, layout, slot_ids, k, paper, side
            )
            layout_kept = layout.subset(keep_slots)
            token_mask = layout_kept.crop != NEWLINE
            dev = view_sig.features.device
            at = (layout_kept.crop[token_mask].to(dev), layout_kept.patch[token_mask].to(dev))
            if merged is not None:
                projected = projector(merged.to(dtype))  # [M, D] in kept order -> [M, H]
            elif view_sig.projected is not None:  # all candidates already projected (DivPrune)
                projected = view_sig.projected[at]  # [M, H]
            else:
                projected = projector(view_sig.features[at].to(dtype))  # [M, D] -> [M, H]
            out = projected.new_empty(len(layout_kept), projected.shape[-1])
            out[token_mask.to(dev)] = projected
            if (~token_mask).any():
                out[~token_mask.to(dev)] = self.image_newline.to(out.dtype)
            offsets = keep_slots  # every token of the anyres layout stands at its slot (merged ones too)
            if extra is not None and len(extra):  # tokens at no slot ([CLS]) lead the image's tokens
                out = torch.cat([projector(extra.to(dtype)), out])
                offsets = torch.cat([torch.full((len(extra),), -1, dtype=torch.long), offsets])
            features.append(out)
            kept_slots.append(keep_slots if k is not None else None)
            slots.append((len(layout), offsets if k is not None else None))  # offsets: kept layout slots
        return EncodedImages(features=features, kept_indices=kept_slots, num_patches=side * side, budgets=budgets,
                             unpruned_counts=unpruned, unpruned_slots=slots)

    def _select_anyres(self, method, method_args, view_sig, layout, slot_ids, k, paper, side):
        """Kept layout slots (sorted), for merging methods their new tokens in slot order, and the tokens
        that stand at no slot ([E, D], VisionZip's [CLS]; None when there are none)."""
        from llava.anyres import NEWLINE

        if k is None:
            return torch.arange(len(layout)), None, None
        if paper:  # K per view, each view scored by its own [CLS] row
            keep = torch.zeros(len(view_sig.features), side * side, dtype=torch.bool)
            selection = None
            if k >= side * side:
                keep[:] = True
            else:
                selection = method.select(view_sig, k, **method_args)  # [V, K]
                keep.scatter_(1, selection.indices.cpu(), True)
            slot_keep = keep[layout.crop.clamp(min=0), layout.patch.clamp(min=0)] & (layout.crop != NEWLINE)
            slots = torch.nonzero(slot_keep).flatten()
            if selection is None or selection.tokens is None:
                return slots, None, None
            # A merging method (VisionZip) makes K tokens per view: each view's own tokens at no patch
            # ([CLS]) lead the image, view after view, and its tokens at patches take their slots.
            extra, at_patches = selection.tokens_in_patch_order()  # [V, E, D], [V, M, D] (patch order per view)
            order = selection.indices.sort(dim=-1).values.cpu()  # [V, M] each view's kept patches, ascending
            crop, patch = layout.crop[slots], layout.patch[slots]
            rank = (order[crop] < patch[:, None]).sum(-1)  # each kept slot's place among its view's patches
            merged = at_patches[crop.to(at_patches.device), rank.to(at_patches.device)]  # [sum M, D] in slot order
            return slots, merged, extra.flatten(0, 1)
        if k >= len(slot_ids):
            return torch.arange(len(layout)), None, None
        crop_idx, patch_idx = layout.crop[slot_ids], layout.patch[slot_ids]
        cand = view_sig.gather(crop_idx, patch_idx)  # candidates of all views: a batch of 1
        selection = method.select(cand, k, **method_args)  # indices into the candidates, [1, K]
        chosen = slot_ids[selection.indices[0].cpu()]
        rows = set(layout.row[chosen].tolist())
        newline = torch.nonzero((layout.crop == NEWLINE) & torch.tensor(
            [r in rows or r == -1 for r in layout.row.tolist()])).flatten()
        keep = torch.cat([chosen, newline]).sort().values
        if selection.tokens is None:
            return keep, None, None
        # Candidate indices are ascending, so tokens in patch order are in the order of their slots.
        extra, at_patches = selection.tokens_in_patch_order()
        return keep, at_patches[0], extra[0]

    # ---- splice -------------------------------------------------------------------------------
    def prepare_multimodal_inputs(
        self,
        input_ids: torch.LongTensor,
        images: torch.Tensor | Sequence[torch.Tensor] | None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        visual_token_num: VisualTokenNum = FROM_PRUNING,
        padding_side: str = "left",
        signals: VisionSignals | None = None,
        image_sizes: Sequence[tuple[int, int]] | None = None,
        encoded: EncodedImages | None = None,
        pruning: PruningConfig | None = None,
        truncate_prompts: bool = False,
        texts: str | Sequence[str] | None = None,
    ) -> MultimodalInputs:
        """Replace every IMAGE_TOKEN_INDEX in `input_ids` [B, L] by that image's kept visual tokens.

        Images are consumed in reading order (row by row, left to right). Padding in `input_ids`
        (attention_mask == 0) is dropped and the spliced rows are re-padded on `padding_side`.
        `signals` (from `vision_signals`) replaces `images` when the tower has already run;
        `encoded` (from `encode_images` / `encode_anyres_images`) splices tokens already projected.
        `pruning` (default: the model's) and the `visual_token_num` override work as in `encode_images`.
        A row longer than the context raises ContextOverflowError, unless `truncate_prompts` cuts it (with
        a ContextOverflowWarning). `texts`: the question of each prompt row (or one for all), which
        question-aware methods (CDPruner) score the patches against; ignored by the others.
        """
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
        if encoded is None and self.family_inputs is not None:  # also without images: it refuses image tokens
            if labels is not None and (images is not None or signals is not None):
                raise ValueError("labels are not supported with this family's images (inference only)")
            input_ids, attention_mask, encoded = self.family_inputs(
                self, input_ids, attention_mask, images, image_sizes, visual_token_num, pruning, signals)
        n_placeholders = int((input_ids == IMAGE_TOKEN_INDEX).sum())
        image_texts = texts_per_image(texts, input_ids)
        image_feats: list[torch.Tensor] = []
        if encoded is not None:
            if len(encoded.features) != n_placeholders:
                raise ValueError(f"the prompts hold {n_placeholders} <image> placeholders but "
                                 f"{len(encoded.features)} encoded images were given")
            image_feats = encoded.features
        elif self.is_anyres() and (images is not None or signals is not None):
            if image_sizes is None or len(image_sizes) != n_placeholders:
                raise ValueError(f"anyres images need one (width, height) in image_sizes per <image> placeholder "
                                 f"({n_placeholders}), got {None if image_sizes is None else len(image_sizes)}")
            views = None
            if images is not None:
                views = torch.cat(list(images)) if not torch.is_tensor(images) else images.flatten(0, 1) \
                    if images.ndim == 5 else images
            encoded = self.encode_anyres_images(views, image_sizes, visual_token_num, signals=signals,
                                                pruning=pruning, texts=image_texts)
            image_feats = encoded.features
        elif signals is not None:
            if signals.features.shape[0] != n_placeholders:
                raise ValueError(
                    f"the prompts hold {n_placeholders} <image> placeholders but signals for "
                    f"{signals.features.shape[0]} images were given"
                )
            encoded = self.encode_images(None, visual_token_num, signals=signals, pruning=pruning, texts=image_texts)
            image_feats = encoded.features
        elif images is not None:
            if not torch.is_tensor(images):
                images = torch.stack([im.squeeze(0) if im.ndim == 4 else im for im in images])
            if images.ndim == 3:
                images = images.unsqueeze(0)
            if images.shape[0] != n_placeholders:
                raise ValueError(
                    f"the prompts hold {n_placeholders} <image> placeholders but {images.shape[0]} images were given"
                )
            encoded = self.encode_images(images, visual_token_num, pruning=pruning, texts=image_texts)
            image_feats = encoded.features
        elif n_placeholders:
            raise ValueError(f"the prompts hold {n_placeholders} <image> placeholders but no images were given")

        # The context: what LLaVA trained with, else what the LLM's positions hold (llava-hf configs).
        max_len = getattr(self.config, "tokenizer_model_max_length", None) or \
            getattr(self.config, "max_position_embeddings", None)
        return self.splice(input_ids, image_feats, self.get_input_embeddings(), attention_mask, labels,
                           padding_side, max_len, truncate_prompts, encoded,
                           position_mode=self._pruning(pruning).position_mode)
