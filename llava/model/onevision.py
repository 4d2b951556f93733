"""LLaVA-OneVision's image path: anyres_max grids, down-sampling, newlines, and pruning on that layout.

One image (its sizes as (height, width), as the processor gives them) becomes a base view and a
rows x cols grid of 384 px crops (`image_grid_pinpoints`), each 27 x 27 = 729 SigLIP patches. In the
LLM the base view's 729 tokens come first (no newline), then the crops' patches merged into one big
grid, cut to the image's extent (unpadding), bilinearly down-sampled when it holds more than
1.1^2 x max_crops x 729 tokens (`anyres_max_<max_crops>`), each row ending with the learned newline.
The projector runs per token, and the down-sampling acts on projected tokens, as in transformers'
`LlavaOnevisionModel.pack_image_features`.

Pruning (pre-LLM methods): an image's candidates are its base tokens and its grid tokens after the
down-sampling (newlines are layout, not candidates). Every per-patch signal is carried onto the
candidates by the same cut and bilinear down-sampling as the features. K counts every visual token
entering the LLM, newlines included: the method picks the largest k' candidates with k' plus the
newlines of the grid rows that keep a token <= K (K >= 2), and a row that keeps nothing loses its
newline. A kept token
is exactly the unpruned model's token at that slot (down-sampled grids are projected in full, the
others only at kept tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from llava.anyres import select_best_resolution
from llava.constants import IMAGE_TOKEN_INDEX
from llava.pruning import get_method
from llava.pruning.base import SIGNAL_PROJECTED, SIGNAL_TEXT_RELEVANCE, VisionSignals
from llava.pruning.config import PruningConfig
from llava.pruning.signals import signal_spec

FAMILY = "llava-onevision"


@dataclass(frozen=True)
class OneVisionGeometry:
    """The checkpoint's image layout: grid resolutions as (height, width), crop size, patches per side."""

    pinpoints: tuple[tuple[int, int], ...]
    crop: int
    side: int
    max_crops: int
    image_token_id: int

    @classmethod
    def from_config(cls, raw: dict) -> "OneVisionGeometry":
        vision = raw["vision_config"]
        ratio = raw.get("vision_aspect_ratio", "anyres_max_9")
        if not str(ratio).startswith("anyres_max_"):
            raise ValueError(f"vision_aspect_ratio={ratio!r}: only 'anyres_max_<n>' is supported")
        pinpoints = raw.get("image_grid_pinpoints") or [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]
        return cls(tuple((int(h), int(w)) for h, w in pinpoints), int(vision["image_size"]),
                   int(vision["image_size"]) // int(vision["patch_size"]), int(ratio[len("anyres_max_"):]),
                   int(raw.get("image_token_index", 151646)))


@dataclass(frozen=True)
class ImageGrid:
    """One image's token layout: `views` crops (base first), the crop grid, the unpadded cut and the output grid."""

    side: int
    rows: int
    cols: int
    cut_rows: slice
    cut_cols: slice
    out_h: int
    out_w: int

    @property
    def views(self) -> int:
        return 1 + self.rows * self.cols

    @property
    def downsampled(self) -> bool:
        return (self.out_h, self.out_w) != (self.cut_rows.stop - self.cut_rows.start,
                                            self.cut_cols.stop - self.cut_cols.start)

    @property
    def num_candidates(self) -> int:
        return self.side * self.side + self.out_h * self.out_w

    @property
    def num_tokens(self) -> int:
        """Visual tokens entering the unpruned LLM: base, grid and one newline per grid row."""
        return self.num_candidates + self.out_h

    def newlines_for(self, kept: torch.Tensor) -> torch.Tensor:
        """The grid rows (sorted) that keep at least one of the candidates `kept` [M]."""
        grid = kept[kept >= self.side * self.side] - self.side * self.side
        return torch.unique(grid // self.out_w)


def image_grid(size_hw: Sequence[int], geometry: OneVisionGeometry) -> ImageGrid:
    """The layout of an image of (height, width) pixels (the rule of transformers' OneVision model)."""
    height, width = (int(v) for v in size_hw)
    best_w, best_h = select_best_resolution((width, height), [(w, h) for h, w in geometry.pinpoints])
    rows, cols, side = best_h // geometry.crop, best_w // geometry.crop, geometry.side
    cur_h, cur_w = rows * side, cols * side
    cut_rows, cut_cols = slice(0, cur_h), slice(0, cur_w)
    if width / height > cur_w / cur_h:
        pad = (cur_h - int(round(height * (cur_w / width), 7))) // 2
        cut_rows = slice(pad, cur_h - pad)
    else:
        pad = (cur_w - int(round(width * (cur_h / height), 7))) // 2
        cut_cols = slice(pad, cur_w - pad)
    h, w = cut_rows.stop - cut_rows.start, cut_cols.stop - cut_cols.start
    ratio = math.sqrt(h * w / (geometry.max_crops * side**2))
    out_h, out_w = (int(h // ratio), int(w // ratio)) if ratio > 1.1 else (h, w)
    return ImageGrid(side, rows, cols, cut_rows, cut_cols, out_h, out_w)


def grid_values(values: torch.Tensor, grid: ImageGrid, downsample: bool = True) -> torch.Tensor:
    """Per-view values [V, N, *C] -> the grid's tokens [h * w, *C] in raster order.

    The crops are merged into one big grid and cut to the image; with `downsample` (and a layout
    that down-samples) the cut grid is bilinearly resized, exactly as the model treats its tokens.
    """
    rest = values.shape[2:]
    s = grid.side
    x = values[1:grid.views].reshape(grid.rows, grid.cols, s, s, -1)  # [r, c, s, s, C]
    x = x.permute(0, 2, 1, 3, 4).reshape(grid.rows * s, grid.cols * s, -1)  # [R, Cc, C]
    tokens = x[grid.cut_rows, grid.cut_cols].flatten(0, 1)  # [h*w, C]
    if downsample:
        tokens = downsample_tokens(tokens, grid)
    return tokens.reshape(-1, *rest)


def downsample_tokens(tokens: torch.Tensor, grid: ImageGrid) -> torch.Tensor:
    """The cut grid's tokens [h*w, C] -> [out_h*out_w, C], bilinearly resized when the layout down-samples."""
    if not grid.downsampled:
        return tokens
    h, w = grid.cut_rows.stop - grid.cut_rows.start, grid.cut_cols.stop - grid.cut_cols.start
    x = tokens.transpose(0, 1).reshape(1, -1, h, w)  # [1, C, h, w]
    x = F.interpolate(x if x.is_floating_point() else x.float(), [grid.out_h, grid.out_w], mode="bilinear")
    return x[0].flatten(1).transpose(0, 1).to(tokens.dtype)  # [out_h*out_w, C]


def candidate_values(values: torch.Tensor, axis: int | None, grid: ImageGrid) -> torch.Tensor:
    """A per-view signal of one image -> its candidates, a batch of 1 (patch axis `axis`; None: per image)."""
    if axis is None:
        return values[:1]
    moved = values.movedim(axis, 1)  # [V, N, ...]
    cand = torch.cat([moved[0], grid_values(moved, grid)])  # [M, ...]
    return cand.unsqueeze(0).movedim(1, axis)


def _fit_selection(method, cand: VisionSignals, k: int, grid: ImageGrid, args: dict) -> torch.Tensor:
    """Sorted candidate indices [M]: the largest selection whose M plus the newlines of its rows is at most k.

    A binary search over the method's own budget; for a ranking method (a larger budget keeps a
    superset) it finds the exact largest fit, for the others a fit.
    """
    if k < 2:
        raise ValueError(f"{FAMILY}: visual_token_num must be >= 2 (a kept grid token brings its row's newline), "
                         f"got {k}")

    def select(budget: int) -> torch.Tensor:
        selection = method.select(cand, budget, **args)
        if selection.tokens is not None:
            raise ValueError(f"pruning method {method.name!r} merges tokens, which {FAMILY} does not support yet "
                             "(use a method that keeps tokens)")
        return selection.indices[0].cpu()

    lo, hi, best = 1, k, select(1)  # one token and at most one newline always fit
    while lo < hi:
        mid = (lo + hi + 1) // 2
        kept = select(mid)
        if len(kept) + len(grid.newlines_for(kept)) <= k:
            lo, best = mid, kept
        else:
            hi = mid - 1
    return best


def _assemble(base_tokens: torch.Tensor, grid_tokens: torch.Tensor, newline: torch.Tensor, grid: ImageGrid,
              kept: torch.Tensor | None) -> torch.Tensor:
    """The LLM's tokens of one image: base, then each grid row and its newline (only kept ones when `kept`).

    base_tokens [n_base, H] and grid_tokens [n_grid, H] are the kept candidates' tokens in order.
    """
    n = grid.side * grid.side
    if kept is None:
        rows = grid_tokens.view(grid.out_h, grid.out_w, -1)
        nl = newline.to(rows.dtype).expand(grid.out_h, 1, -1)
        return torch.cat([base_tokens, torch.cat([rows, nl], dim=1).flatten(0, 1)])
    grid_rows = (kept[kept >= n] - n) // grid.out_w
    pieces, start = [base_tokens], 0
    for row in torch.unique(grid_rows).tolist():
        count = int((grid_rows == row).sum())
        pieces += [grid_tokens[start:start + count], newline.to(grid_tokens.dtype)[None]]
        start += count
    return torch.cat(pieces)


def unpruned_offsets(kept: torch.Tensor, grid: ImageGrid) -> torch.Tensor:
    """The offsets, in the image's unpruned block, of its LLM tokens after pruning to candidates `kept` [M] (sorted):
    base tokens at their index, grid token (r, c) at n + r (out_w + 1) + c, and the newline of each kept row r at
    n + r (out_w + 1) + out_w, in the order `_assemble` gives them. -> [K] long."""
    n = grid.side * grid.side
    kept = kept.cpu().long()
    base, cells = kept[kept < n], kept[kept >= n] - n
    rows, cols = cells // grid.out_w, cells % grid.out_w
    pieces = [base]
    for row in torch.unique(rows).tolist():
        start = n + row * (grid.out_w + 1)
        pieces += [start + cols[rows == row], torch.tensor([start + grid.out_w])]
    return torch.cat(pieces)


def encode_onevision(model, pixel_values, image_sizes, geometry: OneVisionGeometry,
                     visual_token_num="pruning", pruning: PruningConfig | None = None,
                     signals: VisionSignals | None = None):
    """OneVision images -> EncodedImages (n_img x [K_i, H]) with the pruning of `pruning` applied per image.

    pixel_values: [n_img, P_max, 3, S, S] (padded views, as the processor gives them) or n_img x [P_i, 3, S, S];
    image_sizes: n_img x (height, width). `signals` from an earlier tower run over all views skips the tower.
    """
    from .llava_arch import FROM_PRUNING, EncodedImages, expand_budgets, run_tower

    cfg = model._pruning(pruning)
    method = get_method(cfg.method)
    sizes = [tuple(int(v) for v in (s.tolist() if torch.is_tensor(s) else s)) for s in image_sizes]
    grids = [image_grid(s, geometry) for s in sizes]
    if isinstance(visual_token_num, str) and visual_token_num == FROM_PRUNING:
        budgets = [cfg.budget(g.num_tokens) for g in grids]
    else:
        budgets = expand_budgets(visual_token_num, len(grids))
    prune = [k is not None and k < g.num_tokens and method.stage == "pre_llm" for k, g in zip(budgets, grids)]
    needs = method.needs if any(prune) else frozenset()
    tower = model.get_vision_tower()
    if SIGNAL_TEXT_RELEVANCE in needs:
        raise ValueError(f"pruning method {method.name!r} cannot run on {FAMILY}: it scores patches against the "
                         "question with the vision tower's own text tower, which a OneVision checkpoint does not ship")
    if signals is None:
        views = [pixel_values[i][:g.views] for i, g in enumerate(grids)]
        for i, (v, g) in enumerate(zip(views, grids)):
            if v.shape[0] != g.views:
                raise ValueError(f"image {i} of size {sizes[i]} needs {g.views} views, got {v.shape[0]}")
        try:
            signals = run_tower(tower, torch.cat(views), needs, cfg)  # [V, N, D] for all views at once
        except ValueError as err:
            raise ValueError(f"pruning method {method.name!r} cannot run on {FAMILY}: {err}") from None
    elif signals.features.shape[0] != sum(g.views for g in grids):
        raise ValueError(f"the vision signals hold {signals.features.shape[0]} views but images of sizes {sizes} need "
                         f"{sum(g.views for g in grids)}; run vision_signals() on each image's own views "
                         "(pixel_values[i][:views], no padding views)")
    projector = model.mm_projector
    dtype = next(projector.parameters()).dtype
    newline = model.image_newline
    features, kept_all, slots, start = [], [], [], 0
    for g, k, p in zip(grids, budgets, prune):
        sig = signals.index(slice(start, start + g.views))
        start += g.views
        feats = sig.features  # [v, N, D]
        slots.append((g.num_tokens, None))
        if not p:
            grid_proj = projector(grid_values(feats, g, downsample=False).to(dtype))  # [h*w, D] -> [h*w, H]
            grid_proj = downsample_tokens(grid_proj, g)
            features.append(_assemble(projector(feats[0].to(dtype)), grid_proj, newline, g, None))
            kept_all.append(None)
            continue
        cand = VisionSignals(candidate_values(feats, 1, g),
                             **{name: candidate_values(v, signal_spec(name).patch_axis, g)
                                for name, v in sig.values.items()})
        n = g.side * g.side
        full_grid = None
        if g.downsampled or SIGNAL_PROJECTED in needs:
            full_grid = projector(grid_values(feats, g, downsample=False).to(dtype))
            full_grid = downsample_tokens(full_grid, g)  # [out_h*out_w, H]
        if SIGNAL_PROJECTED in needs:
            cand = cand.with_values(projected=torch.cat([projector(feats[0].to(dtype)), full_grid])[None])
        kept = _fit_selection(method, cand, k, g, {**cfg.args})
        base_kept, grid_kept = kept[kept < n], kept[kept >= n] - n
        base_tokens = projector(feats[0][base_kept.to(feats.device)].to(dtype))
        if full_grid is not None:
            grid_tokens = full_grid[grid_kept.to(full_grid.device)]
        else:
            grid_tokens = projector(grid_values(feats, g)[grid_kept.to(feats.device)].to(dtype))
        features.append(_assemble(base_tokens, grid_tokens, newline, g, kept))
        kept_all.append(kept)
        slots[-1] = (g.num_tokens, unpruned_offsets(kept, g))
    return EncodedImages(features=features, kept_indices=kept_all, num_patches=geometry.side**2, budgets=budgets,
                         unpruned_counts=[g.num_tokens for g in grids], unpruned_slots=slots)


def collapse_image_runs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, counts: Sequence[int],
                        image_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts whose images are runs of `image_token_id` (the processor's expansion) -> one IMAGE_TOKEN_INDEX each.

    counts: the unpruned token count of each image in reading order; a run must match it. Prompts
    already holding IMAGE_TOKEN_INDEX sentinels pass through. Rows come back left-padded.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    rows, image = [], 0
    for b in range(input_ids.shape[0]):
        ids = input_ids[b][attention_mask[b].bool()]
        is_img = ids == image_token_id
        n_sentinel = int((ids == IMAGE_TOKEN_INDEX).sum())
        starts = torch.nonzero(is_img & ~torch.cat([is_img.new_zeros(1), is_img[:-1]])).flatten().tolist()
        if n_sentinel + len(starts) > 1:
            raise ValueError(f"prompt {b}: holds {n_sentinel + len(starts)} images; {FAMILY} takes one image "
                             "per prompt here (multi-image prompts are not supported yet)")
        if starts:
            s = starts[0]
            run = int(is_img[s:].int().cumprod(0).sum())
            if run != counts[image]:
                raise ValueError(f"prompt {b}: the image holds {run} <image> tokens but its size gives "
                                 f"{counts[image]}; build the prompt with this checkpoint's processor")
            ids = torch.cat([ids[:s], ids.new_tensor([IMAGE_TOKEN_INDEX]), ids[s + run:]])
        image += n_sentinel + len(starts)
        rows.append(ids)
    width = max(len(r) for r in rows)
    out = input_ids.new_zeros(len(rows), width)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=input_ids.device)
    for b, r in enumerate(rows):
        out[b, width - len(r):] = r
        mask[b, width - len(r):] = 1
    return out, mask
