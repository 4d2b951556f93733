"""One timed pass through LLaVA, stage by stage, each stage a call of the model's own public pieces.

Ours (`run_ours`):
  images --tower(images, needs)--> VisionSignals                        "vision" (includes the signals)
         --method.select (the registry's method) + gather_tokens-->      "select"
         --mm_projector on the K kept tokens-->                          "projector"
  input_ids --prepare_multimodal_inputs(encoded=...) (the splice)-->     "splice"
         --the stock model's forward with its KV cache, or
           LLMLoop.prefill for in-LLM methods (FastV)-->                 "prefill" (first token = greedy argmax)
         --one forward / LLMLoop.step per token, with the cache-->       "decode"
"scoring" is the signals' computation alone: the tower's own probe (`tower.signal_probe`) keeps the
scored layers' q/k during the pass, and `tower.signals_from` (what the tower's forward calls) is timed
again on them after the pass; it is part of "vision". Nothing here re-implements a model piece.

BASELINE, not our code path: the original FasterVLM program (`run_original`, `OriginalTower`), batch 1
as the original code supports. transformers' CLIPVisionModel with eager attention on the same weights,
all layers, output_attentions and output_hidden_states (every [B, H, T, T] map materialised); scores
= the selected layer's [CLS] row of those maps averaged over heads; top-K into a mask; the projector
on all N tokens, then the masked gather. It models what that program costs; the LLM part is ours.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from transformers import CLIPVisionModel

from llava import compat
from llava.model.llava_arch import EncodedImages, add_projected, tower_needs
from llava.model.llm_loop import LLMLoop
from llava.pruning import PruningConfig, gather_tokens
from llava.pruning.signals import signal_spec

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
    llm: dict = field(default_factory=dict)  # what the LLM ran on (`llm_facts`): row lengths, dropper report, KV lengths

    @property
    def ttft(self) -> float:
        return sum(self.seconds[s] for s in ("vision", "select", "projector", "splice", "prefill"))

    @property
    def decode_per_token(self) -> float:
        return self.seconds["decode"] / max(1, self.new_tokens - 1)


def cache_bytes(cache) -> int:
    """Bytes of every key and value tensor held by a transformers cache."""
    return sum(t.numel() * t.element_size() for t in compat.cache_tensors(cache))


class SignalTimer:
    """Times the vision signals' computation alone, with the tower's own pieces.

    `capturing()` attaches the probe the tower itself builds for `needs` (`tower.signal_probe`) around
    a tower run; `time()` then re-runs `tower.signals_from` on what it captured.
    """

    def __init__(self, tower, needs) -> None:
        # Signals read from the hidden states ([CLS] feature) are slices, and `projected` is timed as selection.
        self.tower = tower
        self.needs = frozenset(n for n in tower_needs(needs) if not signal_spec(n).from_hidden)
        self.probe = tower.signal_probe(self.needs)

    def capturing(self):
        return self.probe.attached()

    def signals(self) -> dict[str, torch.Tensor]:
        return self.tower.signals_from(self.needs, self.probe.captured)

    def time(self, clock: Clock, repeats: int = 5) -> float:
        """Median seconds of the signal computation (0 when the method needs none)."""
        if not self.needs:
            return 0.0
        self.signals()
        times = []
        for _ in range(repeats):
            t0 = clock.now()
            self.signals()
            times.append(clock.now() - t0)
        return sorted(times)[len(times) // 2]


class _Decoder:
    """Prefill and decode steps through the model's own LLM: the stock forward with its KV cache, or
    the LLM loop (`LLMLoop.prefill` / `LLMLoop.step`) when an in-LLM method drops tokens."""

    def __init__(self, model, mm, pruning: PruningConfig) -> None:
        self.model = model
        pruner = model.in_llm_pruner(mm, pruning)
        self.loop = LLMLoop(model.get_model(), model.lm_head, pruner) if pruner is not None else None
        self.cache = self.loop.cache if self.loop is not None else compat.new_cache(model.config)
        self.cache_kw = compat.cache_kwarg(model.get_model())
        self.mask, self.position = mm.attention_mask, mm.position_ids[:, -1:]  # left-padded: last column

    def prefill(self, mm) -> torch.Tensor:
        """mm: the spliced batch -> last-position logits [B, V]."""
        if self.loop is not None:
            return self.loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
        out = self.model(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask,
                         position_ids=mm.position_ids, use_cache=True, logits_to_keep=1,
                         **{self.cache_kw: self.cache})
        return out.logits[:, -1]

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """token [B] -> logits [B, V] of the next position."""
        self.position = self.position + 1
        if self.loop is not None:
            return self.loop.step(self.model.get_input_embeddings()(token[:, None]))
        self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        out = self.model(input_ids=token[:, None], attention_mask=self.mask, position_ids=self.position,
                         use_cache=True, **{self.cache_kw: self.cache})
        return out.logits[:, -1]


def llm_facts(decoder: _Decoder, mm) -> dict:
    """What the LLM ran on in a prefill, for the FLOPs and token accounting (read after the prefill).

    row_lengths: real (unpadded) prompt tokens per row; visual_tokens: per image, the tokens entering
    the LLM. With an in-LLM method also: in_llm (the dropper's `report()`), its drop_layers,
    probe_layers and probe query rows (q_rows, a slice or None), and kv_lengths (keys cached per layer).
    """
    facts = {"row_lengths": [int(x) for x in mm.attention_mask.sum(dim=1).tolist()],
             "visual_tokens": list(mm.encoded.token_counts) if mm.encoded is not None else []}
    if decoder.loop is not None:
        dropper = decoder.loop.dropper
        facts.update(in_llm=dropper.report(), drop_layers=list(dropper.drop_layers),
                     probe_layers=list(dropper.probe_layers), q_rows=dropper.q_rows,
                     kv_lengths=decoder.loop.kv_lengths())
    return facts


@torch.no_grad()
def generate_greedy(model, batch: BenchBatch, encoded: EncodedImages, new_tokens: int, clock: Clock,
                    memory: PeakMemory | None, seconds: dict,
                    pruning: PruningConfig | None = None, facts: dict | None = None) -> tuple[torch.Tensor, int, int, tuple]:
    """Splice, prefill and a greedy decode loop with the KV cache; fills seconds['splice'/'prefill'/'decode'].

    Returns (tokens [B, new_tokens], padded prompt length, KV-cache bytes after the prefill, the top-5
    logits and ids of every step). EOS does not stop the loop, so every pass decodes the same number
    of tokens. `facts`, when given, receives `llm_facts` (outside the timed stages).
    """
    t0 = clock.now()
    mm = model.prepare_multimodal_inputs(batch.input_ids, None, batch.attention_mask, padding_side="left",
                                         encoded=encoded)
    t1 = clock.now()
    seconds["splice"] = t1 - t0
    if memory:
        memory.mark("splice")
    decoder = _Decoder(model, mm, pruning or PruningConfig())
    t1 = clock.now()
    logits = decoder.prefill(mm)
    token = logits.argmax(dim=-1)  # [B]
    tops = [logits.float().topk(5, dim=-1)]
    t2 = clock.now()
    seconds["prefill"] = t2 - t1
    if memory:
        memory.mark("prefill")
    kv = cache_bytes(decoder.cache)
    if facts is not None:
        t_facts = clock.now()
        facts.update(llm_facts(decoder, mm))
        t2 += clock.now() - t_facts  # the decode clock starts after this bookkeeping
    tokens = [token]
    for _ in range(new_tokens - 1):
        logits = decoder.step(token)
        token = logits.argmax(dim=-1)
        tokens.append(token)
        tops.append(logits.float().topk(5, dim=-1))
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
    tower, projector = model.get_vision_tower(), model.mm_projector
    n = tower.num_patches
    prune = method.stage == "pre_llm" and k is not None and k < n
    needs = method.needs if prune else frozenset()
    proj_dtype = next(projector.parameters()).dtype
    pruning = PruningConfig(method.name, method_args=method_args)  # in-LLM methods run in the decoder
    seconds: dict[str, float] = {}
    cpu0 = _cpu_time()
    if memory:
        memory.start()
    load = OtherLoad().start()
    t0 = clock.now()
    # The timer's probe holds the scored layers' q/k until the pass ends, so the memory pass goes without it.
    timer = SignalTimer(tower, needs if memory is None else frozenset())
    with timer.capturing():
        signals = tower(batch.images, needs=tower_needs(needs))  # features [B, N, D] (+ cls_attn [B, N] ...)
    t1 = clock.now()
    if memory:
        memory.mark("vision")
    kept = None
    tokens = signals.features
    projected = None
    if prune:
        signals = add_projected(signals, projector, needs)  # DivPrune: all N projected before selecting
        selection = method.select(signals, k, **method_args)  # indices [B, K]
        kept = selection.indices
        tokens = selection.tokens if selection.tokens is not None else gather_tokens(signals.features, kept)
        if selection.tokens is None and signals.projected is not None:
            projected = gather_tokens(signals.projected, kept)  # [B, N, H] -> [B, K, H]
    t2 = clock.now()
    if memory:
        memory.mark("select")
    if projected is None:
        projected = projector(tokens.to(proj_dtype))  # [B, K, D] -> [B, K, H]
    t3 = clock.now()
    if memory:
        memory.mark("projector")
    seconds.update(vision=t1 - t0, select=t2 - t1, projector=t3 - t2)
    budget = k if method.stage == "pre_llm" or k is None else min(k, n)
    facts: dict = {}
    out_tokens, length, kv, top = generate_greedy(model, batch, _encoded(projected, kept, n, budget), new_tokens,
                                                   clock, memory, seconds, pruning, facts)
    wall = clock.now() - t0
    seconds["e2e"] = wall
    other = load.stop()
    busy = (_cpu_time() - cpu0) / max(wall * torch.get_num_threads(), 1e-9)
    seconds["scoring"] = timer.time(clock)  # after the pass, outside its clock
    return PassResult(seconds, out_tokens, length, projected.shape[1], kv, new_tokens, top_logits=top,
                      memory=memory.finish() if memory else {}, cpu_busy=busy, other_load=other, llm=facts)


class OriginalTower:
    """BASELINE, not our code path: the original FasterVLM vision program on the same weights.

    transformers' CLIPVisionModel with attn_implementation="eager", all layers, every attention map
    materialised, as the original implementation runs it. Its parameters are the tower's own tensors
    (no copy); it reuses none of our tower, probe or signal code, since it models a different program.
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
    """BASELINE: one pass of the original FasterVLM implementation's costs at budget k (batch 1).

    Scores, top-K mask and the projector on all N tokens follow the original program; the splice,
    prefill and decode are our model's own (no in-LLM pruning).
    """
    if batch.size != 1:
        raise ValueError(f"the original FasterVLM path runs one image at a time; got a batch of {batch.size}")
    projector = model.mm_projector
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
