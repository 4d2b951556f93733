"""DART inside the LLM: keep the image tokens that duplicate the pivot tokens least (Wen et al.,
arXiv 2502.11494; official code ZichenWen1/DART, `llava/model/language_model/modeling_llama_self.py`,
`DART.get_retained_image_token`, with the defaults of `llava/eval/model_vqa_loader.py`).

The rule, as the official code runs it. Before layer L (default 2) it reads layer L-1's keys after
RoPE (all heads side by side) and the hidden states leaving layer L-1 passed through the LLM's
final norm. Pivots: the `pivots` image tokens and the `text_pivots` tokens after the image with the
largest L1 key norm (default 4 and 4). Each pivot in turn (in the iteration order of the Python
set of their sequence positions, as the official loop) adds the top-k image tokens least similar
to it (cosine of the normed hidden states) among those not taken yet, with
k = min(K, N - pivots) // (pivots + text_pivots); K is the retained-token budget
(`--visual-token-num`, the official `max_num_trunction`, 128 in its scripts). The kept image
tokens are the image pivots and everything the pivots added: pivots + (pivots + text_pivots) * k
(132 of 576 at K = 128). No attention map is used, so it runs with SDPA or flash attention. Kept
tokens keep their positions; layers L.. cache only them; decoding never re-selects.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llava.probe import Captured, HeadGeometry, apply_rope, split_heads

from .base import Selection, VisionSignals
from .fastv import layer_averaged_tokens
from .in_llm import LoopState
from .registry import register_method


def dart_topk(n: int, k: int, pivots: int, text_pivots: int) -> int:
    """Image tokens each pivot adds: min(K, N - pivots) // (pivots + text_pivots)."""
    return min(k, n - pivots) // (pivots + text_pivots)


def _descending(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest values, largest first; ties go to the lower index."""
    return torch.sort(values.float(), descending=True, stable=True).indices[:k]


def dart_select(keys: torch.Tensor, normed: torch.Tensor, positions: list[int], image: torch.Tensor,
                text: torch.Tensor, budget: int, pivots: int, text_pivots: int) -> torch.Tensor:
    """One image's kept tokens. keys [T, D] (RoPE applied), normed [T, H]: the row's tokens; positions:
    their sequence positions (the official indices); image / text: indices of the image tokens and of
    the tokens after the image. -> sorted indices into the row's tokens of the kept image tokens."""
    n = len(image)
    if budget >= n:
        return image
    norms = keys.float().abs().sum(dim=-1)  # [T] L1 norm over all heads
    image_pivots = image[_descending(norms[image], pivots)]
    text_piv = text[_descending(norms[text], min(text_pivots, len(text)))]
    index_of = {positions[i]: i for i in image.tolist() + text.tolist()}
    image_pos = [positions[i] for i in image_pivots.tolist()]
    text_pos = [positions[i] for i in text_piv.tolist()]
    chosen = set(image_pos + text_pos)
    free = set(positions[i] for i in image.tolist()) - set(image_pos)
    free_list = list(free)
    per_pivot = dart_topk(n, budget, pivots, text_pivots)
    for item in list(chosen):  # the official order: the set's own iteration order
        if not free_list or per_pivot <= 0:
            break
        rows = torch.tensor([index_of[p] for p in free_list], device=normed.device)
        sim = F.cosine_similarity(normed[index_of[item]][None].float(), normed[rows].float(), dim=-1)
        added = [free_list[i] for i in _descending(-sim, per_pivot).tolist()]
        chosen.update(added)
        free.difference_update(added)
        free_list = list(free)
    chosen.difference_update(text_pos)
    return torch.tensor(sorted(index_of[p] for p in chosen), dtype=torch.long, device=image.device)


class DARTDropper:
    """DART for one batch, run by the LLM loop (`llava.model.llm_loop`).

    spans: per row, the [start, end) prefill positions of each image's tokens; budgets: K per image
    (None or K >= N: nothing pruned); num_layers: the LLM's depth. After the prefill, `kept` holds
    per image the kept positions within the image (raster order).
    """

    q_rows = slice(0, 0)  # keys only

    def __init__(self, spans, budgets, num_layers: int, layer: int = 2, pivots: int = 4,
                 text_pivots: int | None = None):
        if not 1 <= layer < num_layers:
            raise ValueError(f"dart layer must be in [1, {num_layers - 1}] for a {num_layers}-layer LLM, got {layer}")
        text_pivots = pivots if text_pivots is None else text_pivots
        if pivots < 1 or text_pivots < 0:
            raise ValueError(f"dart needs pivots >= 1 and text_pivots >= 0, got {pivots} and {text_pivots}")
        self.spans, self.layer, self.num_layers = spans, layer, num_layers
        self.pivots, self.text_pivots = pivots, text_pivots
        self.drop_layers, self.probe_layers = (layer,), (layer - 1,)
        self.sizes = [e - s for row in spans for s, e in row]
        self.budgets = [n if k is None else k for n, k in zip(self.sizes, budgets)]
        self.kept: list[torch.Tensor] = []

    def keep(self, layer: int, state: LoopState, captured: dict[int, Captured], geometry: HeadGeometry):
        if state.final_norm is None:
            raise ValueError("dart compares hidden states after the LLM's final norm; the loop gave none")
        cos, sin = state.rope
        keys = split_heads(captured[layer - 1].k, geometry.num_kv_heads)  # [B, Hkv, T, Dh]
        keys = apply_rope(keys, cos, sin).transpose(1, 2).flatten(2)  # [B, T, Hkv*Dh], float32
        normed = state.final_norm(state.hidden)  # [B, T, H]
        budgets = iter(self.budgets)
        keep = []
        for b, row in enumerate(self.spans):
            origin, valid = state.origin[b], state.valid[b]
            positions = state.position_ids[b].tolist()
            take = valid.clone()
            for start, end in row:
                image = torch.nonzero((origin >= start) & (origin < end)).flatten()  # [N] raster order
                text = torch.nonzero(valid & (origin >= end)).flatten()
                kept = dart_select(keys[b], normed[b], positions, image, text, next(budgets),
                                   self.pivots, self.text_pivots)
                take[image] = False
                take[kept] = True
                self.kept.append(origin[kept] - start)
            keep.append(torch.nonzero(take).flatten())
        return keep

    def report(self) -> dict:
        """Image tokens after the pruning layer and the layer-averaged count, per image."""
        counts = [len(k) for k in self.kept]
        return {
            "layer": self.layer,
            "kept_after_layer": counts,
            "layer_averaged": [layer_averaged_tokens(n, k, self.layer, self.num_layers)
                               for n, k in zip(self.sizes, counts)],
        }


@register_method("dart", stage="in_llm", defaults={"layer": 2, "pivots": 4, "text_pivots": None},
                 llm_pruner=DARTDropper)
def dart(signals: VisionSignals, k: int, layer: int = 2, pivots: int = 4, text_pivots: int | None = None) -> Selection:
    """DART: keep the image tokens least duplicated by the pivot tokens, inside the LLM (no pre-LLM rule)."""
    raise ValueError("dart selects inside the LLM (generate with an LLM loop); it has no pre-LLM selection")
