"""One timed pass through LLaVA, stage by stage, using only the model's public pieces.

Ours (`run_ours`):
  images --tower(images, needs)--> VisionSignals            "vision" (includes the [CLS] scoring)
         --method.select--> kept indices, gathered tokens   "select"
         --mm_projector on the K kept tokens-->             "projector"
  input_ids --prepare_multimodal_inputs (the splice)-->     "splice"
         --LLM forward with a DynamicCache-->               "prefill" (first token = greedy argmax)
         --greedy loop, one token per step, with the cache  "decode"
"scoring" is the [CLS]-row computation (cls_attention_row on the q/k of the scored layer), timed
again on its own after the pass from q/k captured by hooks; it is part of "vision".

Original FasterVLM (`run_original`), batch 1 as the original code supports: transformers'
CLIPVisionModel with eager attention on the same weights, all layers, output_attentions and
output_hidden_states (every [B, H, T, T] map materialised); scores = the selected layer's [CLS] row
averaged over heads; top-K into a mask; the projector on all N tokens, then the masked gather. The
LLM part is the same as ours.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from transformers import CLIPVisionModel, DynamicCache

from llava.model.llava_arch import EncodedImages
from llava.model.multimodal_encoder.clip_encoder import cls_attention_row
from llava.pruning import PruningConfig, gather_tokens
from llava.pruning.base import SIGNAL_CLS_ATTN, SIGNAL_CLS_ATTN_LAYERS, SIGNAL_KEYS

from .measure import Clock, OtherLoad, PeakMemory
from .models import BenchBatch

STAGES = ("vision", "scoring", "select", "projector", "splice", "prefill", "decode")


@dataclass
class PassResult:
    """Seconds per stage ('decode' is the whole loop; 'e2e' the wall time of the pass), tokens [B, T_new], sizes."""

    seconds: dict[str, float]
    tokens: torch.Tensor
    length: int  # padded prompt length after the splice
    visual_tokens: int  # per image
    kv_cache_bytes: int  # keys + values after the prefill
    new_tokens: int
    attention_map_bytes: int = 0  # original only: the maps output_attentions returned
    top_logits: tuple[torch.Tensor, torch.Tensor] | None = None  # per step top-5 (values, ids): [B, T, 5] each
    memory: dict[str, int] = field(default_factory=dict)
    cpu_busy: float | None = None  # process CPU time / (wall time x threads)
    other_load: float | None = None  # share of the machine's CPU other processes used meanwhile

    @property
    def ttft(self) -> float:
        return sum(self.seconds[s] for s in ("vision", "select", "projector", "splice", "prefill"))

    @property
    def decode_per_token(self) -> float:
        return self.seconds["decode"] / max(1, self.new_tokens - 1)


def cache_bytes(cache) -> int:
    """Bytes of every key and value tensor held by a transformers cache."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if torch.is_tensor(t):
                total += t.numel() * t.element_size()
    return total


@contextmanager
def _precomputed(model, encoded: EncodedImages):
    """Let prepare_multimodal_inputs splice already-projected tokens, so the splice is timed alone.

    Shadows `encode_images` on this instance only, for the duration of the call.
    """
    model.encode_images = lambda *args, **kwargs: encoded
    try:
        yield
    finally:
        del model.encode_images


class QKTap:
    """Forward hooks that keep q ([CLS] row) and k of chosen tower layers, to time the scoring alone."""

    def __init__(self, tower, needs) -> None:
        last = tower.num_run_layers - 1
        which = set()
        if SIGNAL_CLS_ATTN in needs or SIGNAL_KEYS in needs:
            which.add(last)
        if SIGNAL_CLS_ATTN_LAYERS in needs:
            which.update(range(tower.num_run_layers))
        self.tower, self.needs, self.last, self.which = tower, needs, last, sorted(which)
        self.q: dict[int, torch.Tensor] = {}
        self.k: dict[int, torch.Tensor] = {}
        self._handles = []

    def __enter__(self) -> "QKTap":
        vm = self.tower.vision_tower
        layers = getattr(vm, "vision_model", vm).encoder.layers
        for i in self.which:
            attn = layers[i].self_attn
            self._handles.append(attn.q_proj.register_forward_hook(lambda m, a, o, i=i: self.q.__setitem__(i, o[:, 0])))
            self._handles.append(attn.k_proj.register_forward_hook(lambda m, a, o, i=i: self.k.__setitem__(i, o)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def signals(self) -> None:
        """Recompute the requested signals from the captured q/k, as the tower does."""
        heads = self.tower.config.num_attention_heads
        scale = (self.tower.config.hidden_size // heads) ** -0.5
        if SIGNAL_CLS_ATTN in self.needs:
            cls_attention_row(self.q[self.last], self.k[self.last], heads, scale)
        if SIGNAL_CLS_ATTN_LAYERS in self.needs:
            torch.stack([cls_attention_row(self.q[i], self.k[i], heads, scale) for i in self.which], dim=1)
        if SIGNAL_KEYS in self.needs:
            k = self.k[self.last][:, 1:]
            k.view(*k.shape[:2], heads, -1).mean(dim=2)

    def time(self, clock: Clock, repeats: int = 5) -> float:
        """Median seconds of the signal computation (0 when the method needs none)."""
        if not self.which:
            return 0.0
        self.signals()
        times = []
        for _ in range(repeats):
            t0 = clock.now()
            self.signals()
            times.append(clock.now() - t0)
        return sorted(times)[len(times) // 2]


@torch.no_grad()
def generate_greedy(model, batch: BenchBatch, encoded: EncodedImages, new_tokens: int, clock: Clock,
                    memory: PeakMemory | None, seconds: dict,
                    pruning: PruningConfig | None = None) -> tuple[torch.Tensor, int, int, tuple]:
    """Splice, prefill and a greedy decode loop with the KV cache; fills seconds['splice'/'prefill'/'decode'].

    `pruning` names the method whose in-LLM part (if any) runs during the prefill.

    Returns (tokens [B, new_tokens], padded prompt length, KV-cache bytes after the prefill, the top-5
    logits and ids of every step). EOS does not stop the loop, so every pass decodes the same number
    of tokens.
    """
    t0 = clock.now()
    with _precomputed(model, encoded):
        mm = model.prepare_multimodal_inputs(batch.input_ids, batch.images, batch.attention_mask, None,
                                             encoded.budgets or None, "left")
    t1 = clock.now()
    seconds["splice"] = t1 - t0
    if memory:
        memory.mark("splice")
    mm.encoded = encoded
    pruner = model.in_llm_pruner(mm, pruning) if hasattr(model, "in_llm_pruner") else None
    mask, positions = mm.attention_mask, mm.position_ids
    cache = DynamicCache(config=model.config)
    with pruner.installed() if pruner else nullcontext():
        t1 = clock.now()
        out = model(inputs_embeds=mm.inputs_embeds, attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(dim=-1)  # [B]
        tops = [out.logits[:, -1].float().topk(5, dim=-1)]
        t2 = clock.now()
        seconds["prefill"] = t2 - t1
        if memory:
            memory.mark("prefill")
        kv = cache_bytes(cache)
        tokens = [token]
        position = positions[:, -1:]  # left-padded: the last column is every row's last prompt token
        for _ in range(new_tokens - 1):
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            position = position + 1
            out = model(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                        past_key_values=cache, use_cache=True)
            token = out.logits[:, -1].argmax(dim=-1)
            tokens.append(token)
            tops.append(out.logits[:, -1].float().topk(5, dim=-1))
        seconds["decode"] = clock.now() - t2
    if memory:
        memory.mark("decode")
    top = (torch.stack([t.values for t in tops], dim=1), torch.stack([t.indices for t in tops], dim=1))
    return torch.stack(tokens, dim=1), mm.inputs_embeds.shape[1], kv, top


def _encoded(projected: torch.Tensor, kept: torch.Tensor | None, n: int, k: int | None) -> EncodedImages:
    b = projected.shape[0]
    return EncodedImages(
        features=list(projected.unbind(0)),
        kept_indices=list(kept.unbind(0)) if kept is not None else [None] * b,
        num_patches=n,
        budgets=[k] * b,
    )


@torch.no_grad()
def run_ours(model, batch: BenchBatch, k: int | None, method, method_args: dict, new_tokens: int,
             clock: Clock, memory: PeakMemory | None = None) -> PassResult:
    """One pass of our pipeline at budget k (None or >= N keeps all) with a registered method."""
    tower, projector = model.get_vision_tower(), model.get_model().mm_projector
    n = tower.num_patches
    prune = method.stage == "pre_llm" and k is not None and k < n
    needs = method.needs if prune else frozenset()
    proj_dtype = next(projector.parameters()).dtype
    pruning = PruningConfig(method.name, method_args=method_args)  # in-LLM methods run in generate_greedy
    seconds: dict[str, float] = {}
    cpu0 = _cpu_time()
    if memory:
        memory.start()
    load = OtherLoad().start()
    t0 = clock.now()
    # The tap holds the scored layers' q/k until the pass ends, so the memory pass goes without it.
    with QKTap(tower, needs if memory is None else frozenset()) as tap:
        signals = tower(batch.images, needs=needs)  # features [B, N, D] (+ cls_attn [B, N] ...)
    t1 = clock.now()
    if memory:
        memory.mark("vision")
    kept = None
    tokens = signals.features
    if prune:
        selection = method.select(signals, k, **method_args)  # indices [B, K]
        kept = selection.indices
        tokens = selection.tokens if selection.tokens is not None else gather_tokens(signals.features, kept)
    t2 = clock.now()
    if memory:
        memory.mark("select")
    projected = projector(tokens.to(proj_dtype))  # [B, K, D] -> [B, K, H]
    t3 = clock.now()
    if memory:
        memory.mark("projector")
    seconds.update(vision=t1 - t0, select=t2 - t1, projector=t3 - t2)
    budget = k if method.stage == "pre_llm" or k is None else min(k, n)
    out_tokens, length, kv, top = generate_greedy(model, batch, _encoded(projected, kept, n, budget), new_tokens,
                                                   clock, memory, seconds, pruning)
    wall = clock.now() - t0
    seconds["e2e"] = wall
    other = load.stop()
    busy = (_cpu_time() - cpu0) / max(wall * torch.get_num_threads(), 1e-9)
    seconds["scoring"] = tap.time(clock)  # after the pass, outside its clock
    return PassResult(seconds, out_tokens, length, projected.shape[1], kv, new_tokens, top_logits=top,
                      memory=memory.finish() if memory else {}, cpu_busy=busy, other_load=other)


class OriginalTower:
    """The original FasterVLM vision path on the same weights: eager CLIP with every map materialised.

    Built by composing transformers' CLIPVisionModel (attn_implementation="eager") whose parameters
    are the tower's own tensors (no copy); the model code is untouched.
    """

    def __init__(self, tower) -> None:
        from accelerate import init_empty_weights

        config = copy.deepcopy(tower.vision_tower.config)
        config._attn_implementation = "eager"
        with init_empty_weights(include_buffers=False):
            clip = CLIPVisionModel(config)
        clip.load_state_dict(tower.vision_tower.state_dict(), strict=False, assign=True)
        self.clip = clip.to(tower.device).eval()  # the buffers (position ids) were built on the CPU
        self.select_layer = tower.select_layer
        self.num_patches = tower.num_patches

    @torch.no_grad()
    def __call__(self, images: torch.Tensor):
        """images [B, 3, S, S] -> (features [B, N, D], [CLS] rows [B, H, N], bytes of all attention maps)."""
        weight = getattr(self.clip, "vision_model", self.clip).embeddings.patch_embedding.weight
        out = self.clip(pixel_values=images.to(device=weight.device, dtype=weight.dtype),
                        output_attentions=True, output_hidden_states=True)
        maps = sum(a.numel() * a.element_size() for a in out.attentions)
        features = out.hidden_states[self.select_layer][:, 1:]  # [B, T, D] -> [B, N, D]
        rows = out.attentions[self.select_layer][:, :, 0, 1:]  # [B, H, T, T] -> [B, H, N]
        return features, rows, maps


@torch.no_grad()
def run_original(model, original: OriginalTower, batch: BenchBatch, k: int | None, new_tokens: int,
                 clock: Clock, memory: PeakMemory | None = None) -> PassResult:
    """One pass of the original FasterVLM implementation's costs at budget k (batch 1)."""
    if batch.size != 1:
        raise ValueError(f"the original FasterVLM path runs one image at a time; got a batch of {batch.size}")
    projector = model.get_model().mm_projector
    n = original.num_patches
    k_eff = n if k is None else min(k, n)
    seconds: dict[str, float] = {}
    cpu0 = _cpu_time()
    if memory:
        memory.start()
    load = OtherLoad().start()
    t0 = clock.now()
    features, rows, maps = original(batch.images)
    t1 = clock.now()
    if memory:
        memory.mark("vision")
    scores = rows.mean(dim=1)  # [B, H, N] -> [B, N]
    t_score = clock.now()
    top_ids = torch.topk(scores, k=k_eff, dim=1).indices  # [B, K]
    keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top_ids, True)  # [B, N]
    t2 = clock.now()
    if memory:
        memory.mark("select")
    projected = projector(features.to(next(projector.parameters()).dtype))  # all N: [B, N, D] -> [B, N, H]
    projected = torch.stack([p[m] for p, m in zip(projected, keep)])  # [B, N, H] -> [B, K, H]
    t3 = clock.now()
    if memory:
        memory.mark("projector")
    seconds.update(vision=t1 - t0, scoring=t_score - t1, select=t2 - t1, projector=t3 - t2)
    kept = torch.stack([torch.nonzero(m).flatten() for m in keep])
    out_tokens, length, kv, top = generate_greedy(model, batch, _encoded(projected, kept, n, k_eff), new_tokens,
                                                   clock, memory, seconds, PruningConfig())
    wall = clock.now() - t0
    seconds["e2e"] = wall
    other = load.stop()
    busy = (_cpu_time() - cpu0) / max(wall * torch.get_num_threads(), 1e-9)
    return PassResult(seconds, out_tokens, length, projected.shape[1], kv, new_tokens, attention_map_bytes=maps,
                      top_logits=top, memory=memory.finish() if memory else {}, cpu_busy=busy, other_load=other)


def _cpu_time() -> float:
    import time

    return time.process_time()
