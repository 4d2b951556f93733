"""Generation that computes each image's shared prompt prefix once and continues every question from it.

LLaVA's prompt puts the image right after the system prompt, so for a method whose kept tokens do
not depend on the question (every pre-LLM method, and the unpruned model) all questions about one
image share the spliced prefix `system prompt + visual tokens (+ any common question text)`. Its KV
cache is computed once (batch of 1) and kept in a `PrefixStore`; a batch of questions then runs as

    row b:  [ prefix (P tokens, cached) | left padding | question suffix b ]

with the attention mask zero on the padding, so the positions (the mask's cumulative sum, as
transformers' generate computes them) continue at P. P is the common token prefix of the spliced
rows (never a hard-coded length), cut to at most every row's length minus one.

Under `position_mode="keep"` the spliced rows carry position ids with gaps (the unpruned layout's):
the prefix is also the common prefix of those ids, it is prefilled at them, and `generate` gets every
row's ids explicitly (padding at 0).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch

from llava import compat

from .llava_arch import FROM_PRUNING
from .multimodal import last_is_largest


@dataclass
class _Prefix:
    embeds: torch.Tensor  # [P, H] the spliced prefix
    cache: Any  # its KV cache, batch of 1
    positions: torch.Tensor | None = None  # [P] its position ids under position_mode="keep" (None: 0 .. P - 1)


class PrefixStore:
    """Prefix KV caches keyed by (image key, budget) for later generate calls.

    It holds at most `size` caches (LRU; None: no cap) and, after `retain(keep)`, only those `keep`
    accepts. `computed` counts the prefix prefills run and `seconds` their time, `peak` the most caches
    held at once (for tests and the bench).
    """

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, _Prefix] = OrderedDict()
        self._keep: Callable[[Hashable], bool] = lambda key: True
        self.computed = 0
        self.seconds = 0.0
        self.peak = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> _Prefix | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: Hashable, prefix: _Prefix) -> None:
        if not self._keep(key):
            return
        self._items[key] = prefix
        self._items.move_to_end(key)
        while self.size is not None and len(self._items) > max(self.size, 0):
            self._items.popitem(last=False)
        self.peak = max(self.peak, len(self._items))

    def retain(self, keep: Callable[[Hashable], bool]) -> None:
        """Drop the caches `keep` rejects, and from now on store only those it accepts."""
        self._keep = keep
        for key in [k for k in self._items if not keep(k)]:
            del self._items[key]


def common_prefix_length(rows: Sequence[torch.Tensor]) -> int:
    """Length of the longest prefix all rows [L_b, H] share exactly (position by position)."""
    n = min(r.shape[0] for r in rows)
    same = torch.ones(n, dtype=torch.bool, device=rows[0].device)
    for r in rows[1:]:
        same &= (r[:n] == rows[0][:n]).all(-1)
    differs = torch.nonzero(~same)
    return int(differs[0]) if len(differs) else n


@torch.no_grad()
def generate_shared(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    prefix_keys: Sequence[Hashable | None],
    store: PrefixStore,
    *,
    images=None,
    vision_signals=None,
    image_sizes=None,
    visual_token_num=FROM_PRUNING,
    pruning=None,
    truncate_prompts: bool = False,
    texts=None,
    **gen_kwargs,
) -> torch.LongTensor:
    """`model.generate` with each row continued from its image's cached prefix; returns new tokens [B, T_new].

    prefix_keys[b] names the prefix row b shares (image key and budget); None: the row shares with
    no other (e.g. text-only). Only question-independent methods may share: an in-LLM method, or one that
    reads the question text (CDPruner), raises.
    """
    from llava.pruning import get_method

    method = get_method(model._pruning(pruning).method)
    if method.stage == "pre_llm" and method.question_dependent:
        raise ValueError(f"pruning method {method.name!r} chooses its tokens from the question text; "
                         "it cannot share a prefix across questions (use model.generate)")
    mm = model.prepare_multimodal_inputs(
        input_ids, images, attention_mask, None, visual_token_num, "left", signals=vision_signals,
        image_sizes=image_sizes, pruning=pruning, truncate_prompts=truncate_prompts, texts=texts,
    )
    model.last_multimodal = mm.encoded
    if model.in_llm_pruner(mm, pruning) is not None:
        raise ValueError("an in-LLM pruning method depends on the question; it cannot share a prefix")
    if gen_kwargs.get("num_beams", 1) != 1:
        raise ValueError("a shared prefix supports num_beams=1 only")
    mask = mm.attention_mask.bool()
    rows = [mm.inputs_embeds[b][mask[b]] for b in range(len(mask))]  # B x [L_b, H], unpadded
    keep = model._pruning(pruning).position_mode == "keep"
    if keep and not last_is_largest(mm.position_ids, mm.attention_mask):  # a prompt ends inside a pruned image
        return model.generate_spliced(mm, "keep", **gen_kwargs)
    row_pos = [mm.position_ids[b][mask[b]] for b in range(len(mask))] if keep else None  # B x [L_b]

    def common(members: list[int], stored: _Prefix | None = None) -> int:
        """The common prefix of the members' rows (and of their positions under "keep"), and of `stored`'s."""
        embeds = [rows[b] for b in members] + ([stored.embeds] if stored is not None else [])
        n = common_prefix_length(embeds)
        if keep:
            pos = [row_pos[b][:, None] for b in members]
            pos += [stored.positions[:, None]] if stored is not None and stored.positions is not None else []
            n = min(n, common_prefix_length(pos)) if stored is None or stored.positions is not None else 0
        return n
    keys = [k if k is not None else ("row", b, id(mm)) for b, k in enumerate(prefix_keys)]
    groups: dict[Hashable, list[int]] = {}
    for b, k in enumerate(keys):
        groups.setdefault(k, []).append(b)

    prefixes: dict[Hashable, tuple[_Prefix, int]] = {}  # key -> (prefix, usable length)
    for key, members in groups.items():
        members_rows = [rows[b] for b in members]
        own = min(common(members), min(r.shape[0] for r in members_rows) - 1)
        stored = store.get(key) if prefix_keys[members[0]] is not None else None
        if stored is not None:
            usable = min(own, common(members[:1], stored))
            if usable > 0:
                prefixes[key] = (stored, usable)
                continue
        if own < 1:
            own = 0
        start = time.perf_counter()
        positions = row_pos[members[0]][:own] if keep else None
        prefix = _Prefix(members_rows[0][:own], _prefill(model, members_rows[0][:own], positions), positions)
        store.seconds += time.perf_counter() - start
        store.computed += 1
        if prefix_keys[members[0]] is not None:
            store.put(key, prefix)
        prefixes[key] = (prefix, own)

    length = min(usable for _, usable in prefixes.values())  # one cache length for the whole batch
    if length < 1:  # nothing shared (e.g. a one-token prompt): the plain path
        return model.generate_spliced(mm, "keep" if keep else None, **gen_kwargs)
    order = list(prefixes)
    cache = compat.batch_prefix_cache(model.llm.config, [prefixes[k][0].cache for k in order],
                                      [order.index(k) for k in keys], length)
    width = max(r.shape[0] for r in rows) - length  # longest suffix
    ref = rows[0]
    embeds = ref.new_zeros(len(rows), length + width, ref.shape[-1])
    full_mask = torch.zeros(len(rows), length + width, dtype=torch.long, device=ref.device)
    full_pos = torch.zeros(len(rows), length + width, dtype=torch.long, device=ref.device)
    for b, r in enumerate(rows):
        suffix = r.shape[0] - length
        embeds[b, :length] = r[:length]
        embeds[b, length + width - suffix:] = r[length:]  # [prefix | pad | suffix]
        full_mask[b, :length] = 1
        full_mask[b, length + width - suffix:] = 1
        if keep:
            full_pos[b, :length] = row_pos[b][:length]
            full_pos[b, length + width - suffix:] = row_pos[b][length:]
    positions = {"position_ids": full_pos} if keep else {}  # compact: transformers numbers them from the mask
    return model.llm.generate(inputs_embeds=embeds, attention_mask=full_mask,
                              **{compat.cache_kwarg(model.llm): cache}, **positions, **gen_kwargs)


def _prefill(model, prefix: torch.Tensor, positions: torch.Tensor | None = None) -> Any:
    """The KV cache of one spliced prefix [P, H] (at `positions` [P], default 0..P-1; nothing padded)."""
    cache = compat.new_cache(model.llm.config)
    if prefix.shape[0] == 0:
        return cache
    at = {} if positions is None else {"position_ids": positions[None].to(prefix.device)}
    out = model.llm(inputs_embeds=prefix[None], use_cache=True, logits_to_keep=1,
                    **{compat.cache_kwarg(model.llm): cache}, **at)
    return compat.output_cache(out)
