"""Qwen-VL token layout after pruning: M-RoPE positions of kept tokens, the splice, and generation.

For the Qwen-VL families (Qwen2.5-VL here; Qwen3-VL reuses it). The processor expands each image
into a run of N_i pad tokens (`<|image_pad|>`), one per merged token (2 x 2 patches). The stock
model numbers them with M-RoPE: three position axes (t, h, w), [3, B, L]. Text takes the same value
on all three axes; an image starting at s gives its merged token (r, c) the position (s, s + r, s + c),
and the text after it continues at s + max(H, W) (the stock `get_rope_index`).

API (all pure functions over tensors, except the loop):

- `stock_positions(model_cls, config, input_ids, attention_mask, image_token_id, image_grid_thw)`
  -> (position_ids [3, B, L], rope_deltas [B, 1]): the unpruned layout, from the stock model's own
  `get_rope_index` (through `llava.compat.stock_rope_index`; nothing of M-RoPE is rewritten here).
- `splice(input_ids, attention_mask, embed, features, kept, counts, positions, image_token_id, mode)`
  -> `MultimodalInputs` with inputs_embeds [B, L', H], attention_mask [B, L'] and position_ids
  [3, B, L'] (left-padded): each image's run of pad tokens becomes its kept tokens only, and
  `image_spans[b]` lists the [start, end) of each image's kept tokens in row b (where per-token
  extras such as Qwen3-VL's DeepStack features go: `features[i]` and `kept[i]` are in the same order).
  mode (`POSITION_MODES`):
    * "keep" (default): every kept token, text or visual, keeps the position it has in the unpruned
      layout; the text after an image continues as in the unpruned model.
    * "compact": a *pruned* image's K_i kept tokens take consecutive 1-D positions (t = h = w) from
      the image's start s, and everything after it moves down so the text continues at s + K_i, as if
      the pruned tokens never existed. An image that keeps all its tokens keeps the stock (t, h, w)
      layout, so with nothing pruned both modes are the unpruned model.
- `pruned_positions(positions, keep, image_of, pruned, mode)`: the position part of `splice` alone.
- `check_runs(input_ids, attention_mask, image_token_id, counts)`: each image's run is N_i long.
- `next_positions(position_ids, attention_mask)` -> [B, 1]: the position of each row's next token
  (one past the row's largest position; the stock model's `rope_deltas` rule, per row).
- `MRopeLoop(text_model, lm_head, prefill_kwargs=None)`: prefill / step over the stock text model
  (`Qwen2_5_VLTextModel`, Qwen3-VL's text model), with the same interface as
  `llava.model.llm_loop.LLMLoop`, so `llm_loop.generate(loop, embeds, mask, position_ids [3, B, T],
  generation_config, ...)` decodes with it. Each step gives every row its next position on all
  three axes. `prefill_kwargs` go to the text model's prefill call only (e.g. Qwen3-VL's DeepStack
  inputs).
- `full_logits(text_model, lm_head, inputs_embeds, attention_mask, position_ids)` -> [B, L', V].
- In-LLM methods: `llm_loop.LLMLoop(text_model, lm_head, dropper)` also takes the [3, B, T] ids (it
  carries them through its drops), so the same `llm_loop.generate` call prunes inside the LLM.

Shapes: B rows, L prompt tokens (pad runs expanded), L' after pruning, H hidden width, V vocabulary.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from llava import compat

from llava.pruning.config import POSITION_MODES

from .splice import MultimodalInputs


def check_position_mode(mode: str | None) -> str:
    """None -> "keep"; anything outside POSITION_MODES raises."""
    mode = "keep" if mode is None else mode
    if mode not in POSITION_MODES:
        raise ValueError(f"position mode {mode!r}: must be one of {list(POSITION_MODES)}")
    return mode


def image_token_types(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      image_token_id: int) -> torch.Tensor:
    """[B, L] int: 1 at image pad tokens, 0 elsewhere (the stock `mm_token_type_ids`)."""
    types = (input_ids == image_token_id).int()
    return types if attention_mask is None else types * attention_mask.int()


def stock_positions(model_cls: type, config, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                    image_token_id: int, image_grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The unpruned M-RoPE layout: (position_ids [3, B, L], rope_deltas [B, 1]), padding at 0."""
    return compat.stock_rope_index(model_cls, config, input_ids, image_token_types(input_ids, attention_mask,
                                                                                    image_token_id),
                                   image_grid_thw, attention_mask)


def image_runs(ids: torch.Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """[start, end) of each run of image pad tokens in one row ids [L]."""
    is_img = (ids == image_token_id).int()
    edges = torch.diff(torch.cat([is_img.new_zeros(1), is_img, is_img.new_zeros(1)]))
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    return list(zip(starts, ends))


def check_runs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, image_token_id: int,
               counts: Sequence[int]) -> None:
    """Raise unless the prompts' image runs, in reading order, are exactly `counts` (N_i) long."""
    image = 0
    for b in range(input_ids.shape[0]):
        ids = input_ids[b] if attention_mask is None else input_ids[b][attention_mask[b].bool()]
        for start, end in image_runs(ids, image_token_id):
            if image >= len(counts):
                raise ValueError(f"prompt {b}: holds more image runs than the {len(counts)} images given")
            if end - start != counts[image]:
                raise ValueError(f"prompt {b}: image {image} holds {end - start} pad tokens but its grid gives "
                                 f"{counts[image]}; build the prompt with this checkpoint's processor")
            image += 1
    if image != len(counts):
        raise ValueError(f"the prompts hold {image} image runs but {len(counts)} images were given")


def pruned_positions(positions: torch.Tensor, keep: torch.Tensor, image_of: torch.Tensor,
                     pruned: Sequence[bool], mode: str = "keep") -> torch.Tensor:
    """One row: stock positions [3, n] of its valid tokens -> positions [3, n'] of the kept ones.

    keep [n] bool; image_of [n] long: the image (global index) of each token, -1 for text;
    pruned[i]: whether image i lost tokens (only those are renumbered in "compact" mode).
    """
    mode = check_position_mode(mode)
    if mode == "keep":
        return positions[:, keep]
    out = positions.clone()
    shift = 0
    n = positions.shape[1]
    start = 0
    while start < n:
        i = int(image_of[start])
        if i < 0:
            out[:, start] -= shift
            start += 1
            continue
        end = start
        while end < n and int(image_of[end]) == i:
            end += 1
        first = int(positions[0, start])  # the image's start s (its t axis for a still image)
        if pruned[i]:
            kept = keep[start:end]
            k = int(kept.sum())
            advance = int(positions[:, start:end].max()) + 1 - first  # the stock text after: s + advance
            ranks = kept.long().cumsum(0) - 1  # a kept token's rank among the image's kept tokens
            out[:, start:end] = (first - shift + ranks).expand(3, -1)
            shift += advance - k
        else:
            out[:, start:end] -= shift
        start = end
    return out[:, keep]


def splice(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, embed: nn.Module,
           features: Sequence[torch.Tensor], kept: Sequence[torch.Tensor | None], counts: Sequence[int],
           positions: torch.Tensor, image_token_id: int, mode: str = "keep", encoded=None) -> MultimodalInputs:
    """Prompts with expanded image runs -> the LLM's left-padded inputs with only the kept visual tokens.

    input_ids [B, L] (either padding side), features n_img x [K_i, H] in reading order, kept n_img x
    (sorted merged-token indices [K_i] of that image, or None: all), counts n_img x N_i (each run must
    be N_i long), positions [3, B, L] the unpruned layout (`stock_positions`).
    """
    mode = check_position_mode(mode)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    valid = attention_mask.bool()
    text = embed(input_ids.clamp(min=0))  # [B, L, H]
    rows, row_pos, spans, image = [], [], [], 0
    for b in range(input_ids.shape[0]):
        ids, emb, pos = input_ids[b][valid[b]], text[b][valid[b]], positions[:, b][:, valid[b]]
        image_of = torch.full_like(ids, -1)
        keep = torch.ones_like(ids, dtype=torch.bool)
        pieces, row_spans, cursor, out_len = [], [], 0, 0
        for start, end in image_runs(ids, image_token_id):
            if image >= len(features):
                raise ValueError(f"prompt {b}: holds more image runs than the {len(features)} images given")
            if end - start != counts[image]:
                raise ValueError(f"prompt {b}: image {image} holds {end - start} pad tokens but its grid gives "
                                 f"{counts[image]}; build the prompt with this checkpoint's processor")
            image_of[start:end] = image
            if kept[image] is not None:
                keep[start:end] = False
                keep[start + kept[image].to(ids.device)] = True
            pieces.append(emb[cursor:start])
            out_len += start - cursor
            feat = features[image].to(device=emb.device, dtype=emb.dtype)
            pieces.append(feat)
            row_spans.append((out_len, out_len + feat.shape[0]))
            out_len += feat.shape[0]
            cursor = end
            image += 1
        pieces.append(emb[cursor:])
        pruned = [k is not None for k in kept]
        rows.append(torch.cat(pieces))
        row_pos.append(pruned_positions(pos, keep, image_of, pruned, mode))
        spans.append(row_spans)
    if image != len(features):
        raise ValueError(f"the prompts hold {image} image runs but {len(features)} images were given")
    width = max(r.shape[0] for r in rows)
    ref = rows[0]
    embeds = ref.new_zeros(len(rows), width, ref.shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=ref.device)
    position_ids = torch.zeros(3, len(rows), width, dtype=torch.long, device=ref.device)
    for b, (row, pos) in enumerate(zip(rows, row_pos)):
        n = row.shape[0]
        embeds[b, width - n:], mask[b, width - n:] = row, 1
        position_ids[:, b, width - n:] = pos.to(ref.device)
        spans[b] = [(s + width - n, e + width - n) for s, e in spans[b]]
    return MultimodalInputs(embeds, mask, position_ids, None, spans, encoded)


def next_positions(position_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """position_ids [3, B, T], attention_mask [B, T] -> [B, 1]: one past each row's largest position."""
    masked = position_ids.masked_fill(~attention_mask.bool()[None], -1)
    return masked.amax(dim=(0, 2))[:, None] + 1


def full_logits(text_model: nn.Module, lm_head: nn.Module, inputs_embeds: torch.Tensor,
                attention_mask: torch.Tensor, position_ids: torch.Tensor, **kwargs) -> torch.Tensor:
    """Every position's logits [B, L', V] from the stock text model (no cache)."""
    out = text_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                     use_cache=False, **kwargs)
    return lm_head(out.last_hidden_state)


class MRopeLoop:
    """Prefill and decode steps over a stock M-RoPE text model (the `LLMLoop` interface, no token drops).

    text_model: `Qwen2_5_VLTextModel` (or Qwen3-VL's); lm_head: its output projection.
    prefill_kwargs: extra inputs of the text model's prefill call (Qwen3-VL's DeepStack features).
    """

    dropper = None  # `llm_loop.generate` asks the loop for its in-LLM method; this loop drops nothing

    def __init__(self, text_model: nn.Module, lm_head: nn.Module, prefill_kwargs: dict | None = None) -> None:
        self.model = text_model
        self.lm_head = lm_head
        self.config = text_model.config
        self.embed = text_model.get_input_embeddings()
        self.prefill_kwargs = dict(prefill_kwargs or {})
        self.cache = compat.new_cache(text_model.config)
        self.mask: torch.Tensor | None = None  # [B, T so far]
        self.next_position: torch.Tensor | None = None  # [B, 1]

    def _run(self, embeds: torch.Tensor, position_ids: torch.Tensor, **kwargs) -> torch.Tensor:
        out = self.model(inputs_embeds=embeds, attention_mask=self.mask, position_ids=position_ids, use_cache=True,
                         **{compat.cache_kwarg(self.model): self.cache}, **kwargs)
        return self.lm_head(out.last_hidden_state[:, -1])  # [B, H] -> [B, V]

    @torch.no_grad()
    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        """inputs_embeds [B, T, H] (left-padded), attention_mask [B, T], position_ids [3, B, T] -> logits [B, V]."""
        if position_ids.ndim != 3 or position_ids.shape[0] != 3:
            raise ValueError(f"MRopeLoop takes M-RoPE position ids [3, B, T], got {tuple(position_ids.shape)}")
        self.mask = attention_mask.long()
        self.next_position = next_positions(position_ids, attention_mask)
        return self._run(inputs_embeds, position_ids, **self.prefill_kwargs)

    @torch.no_grad()
    def step(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """One decode step for every row: token_embeds [B, 1, H] -> logits [B, V], at each row's next position."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        position_ids = self.next_position[None].expand(3, -1, -1)  # [3, B, 1]
        logits = self._run(token_embeds, position_ids)
        self.next_position = self.next_position + 1
        return logits


def grid_from(image_grid_thw: torch.Tensor | None, image_sizes, family: str) -> torch.Tensor | None:
    """image_grid_thw [n_img, 3], or `image_sizes` when it holds those (t, h, w) rows (the drivers' generic keyword)."""
    if image_grid_thw is not None or image_sizes is None:
        return image_grid_thw
    grid = torch.as_tensor(image_sizes)
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"{family}: image_sizes must be the processor's image_grid_thw [n_img, 3], got shape "
                         f"{tuple(grid.shape)}")
    return grid


def refuse_renumbering(dropper, method: str, family: str) -> None:
    """A one-line error when an in-LLM method would renumber positions (M-RoPE positions are kept here)."""
    if getattr(dropper, "renumber_positions", False):
        raise ValueError(f"pruning method {method!r} renumbers the surviving tokens' positions inside the LLM, which "
                         f"{family} does not support yet (its M-RoPE positions are kept); use a setting that keeps "
                         "positions (pdrop: positions=keep)")


def selection_plan(method, cfg, counts: list[int], visual_token_num) -> tuple[list, list[bool], frozenset]:
    """(budgets, prune, needs): per image its K_i and whether it is pruned before the LLM; the tower's signals.

    K_i = cfg.budget(N_i) unless `visual_token_num` overrides it (one K or one per image). A pre-LLM
    method needs its signals only when some image keeps fewer than its N_i tokens; an in-LLM method
    gets every token (its K_i is the image's budget inside the LLM).
    """
    from .llava_arch import _from_pruning, expand_budgets

    budgets = [cfg.budget(n) for n in counts] if _from_pruning(visual_token_num) else \
        expand_budgets(visual_token_num, len(counts))
    prune = [k is not None and k < n and method.stage == "pre_llm" for k, n in zip(budgets, counts)]
    return budgets, prune, (method.needs if any(prune) else frozenset())
