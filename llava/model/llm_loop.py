"""The LLM loop: a decoder-only transformers model run layer by layer, dropping tokens where asked.

With no in-LLM pruning the stock model runs (`generate` of transformers). With an in-LLM method
this loop runs the same decoder layers, but between layers it removes the tokens the method drops
from the hidden states, so later layers compute on fewer tokens and store fewer keys: every layer
keeps its own KV length, and each decode step masks each layer against its own keys. Kept tokens
keep their unpruned positions, unless the method renumbers them (`renumber_positions`, as
PyramidDrop's official code does): then the survivors take consecutive positions and the decode
steps of the later layers continue from there. A method may score a drop layer's own q/k on the
tokens entering it (a probe layer that is also a drop layer), and may add tokens at a drop
(`inserted`, SparseVLM's recycling): they join the hidden states, so the later layers compute on
them and cache them. Layers are called through `llava.compat`.

Shapes: B rows (left-padded), T prefill tokens, H hidden width, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from llava import compat
from llava.probe import HeadGeometry, QKProbe, rope_tables
from llava.pruning.in_llm import INSERTED, Inserted, LoopState, TokenDropper


def _subset(state: LoopState, keep: list[torch.Tensor]) -> LoopState:
    """Keep `keep[b]` tokens of row b; shorter rows are left-padded to the longest."""
    width = max(len(k) for k in keep)
    b, _, h = state.hidden.shape
    dev = state.hidden.device
    index = torch.zeros(b, width, dtype=torch.long, device=dev)
    valid = torch.zeros(b, width, dtype=torch.bool, device=dev)
    for row, k in enumerate(keep):
        index[row, width - len(k):] = k.to(dev)
        valid[row, width - len(k):] = True
    take = lambda t: t.gather(1, index if t.ndim == 2 else index[..., None].expand(-1, -1, t.shape[-1]))  # noqa: E731
    origin = take(state.origin).masked_fill(~valid, -1)
    mrope = None if state.mrope_ids is None else torch.stack([take(axis) for axis in state.mrope_ids])
    return LoopState(take(state.hidden), take(state.position_ids), valid & take(state.valid), origin,
                     tuple(take(r) for r in state.rope), state.final_norm, mrope)


def _spliced(state: LoopState, keep: list[torch.Tensor], added: list[Inserted | None]) -> LoopState:
    """`_subset`, with row b's `added[b]` tokens placed among its kept ones (their origin: INSERTED or the tag given).

    rope is left None: the caller rebuilds it from the new positions.
    """
    rows = []
    for b, k in enumerate(keep):
        k = k.to(state.hidden.device)
        ins = added[b]
        m = 0 if ins is None else len(ins.hidden)
        if ins is not None and ins.position_ids is None:  # a placeholder the caller renumbers (never below the row's)
            pos_new = state.position_ids[b, k].max().expand(m) if len(k) else state.position_ids.new_zeros(m)
        else:
            pos_new = None if ins is None else ins.position_ids.to(k.device, state.position_ids.dtype)
        hidden = state.hidden[b, k] if ins is None else torch.cat([state.hidden[b, k], ins.hidden.to(state.hidden)])
        pos = state.position_ids[b, k] if ins is None else torch.cat([state.position_ids[b, k], pos_new])
        origin = state.origin[b, k] if ins is None else torch.cat(
            [state.origin[b, k], torch.as_tensor(ins.origin, dtype=state.origin.dtype, device=k.device).expand(m).clamp(max=INSERTED)])
        valid = state.valid[b, k] if ins is None else torch.cat(
            [state.valid[b, k], torch.ones(m, dtype=torch.bool, device=k.device)])
        # kept token j sorts at 2j + 1, an added token before kept token s at 2s: a stable sort interleaves them
        order_key = torch.arange(len(k), device=k.device) * 2 + 1
        if ins is not None:
            order_key = torch.cat([order_key, ins.slot.to(k.device) * 2])
        order = torch.sort(order_key, stable=True).indices
        rows.append((hidden[order], pos[order], origin[order], valid[order]))
    width = max(len(r[0]) for r in rows)
    b, _, h = state.hidden.shape
    hidden = state.hidden.new_zeros(b, width, h)
    position_ids = state.position_ids.new_zeros(b, width)
    origin = state.origin.new_full((b, width), -1)
    valid = torch.zeros(b, width, dtype=torch.bool, device=state.valid.device)
    for row, (hid, pos, org, val) in enumerate(rows):  # left-padded to the longest row
        n = len(hid)
        hidden[row, width - n:], position_ids[row, width - n:] = hid, pos
        origin[row, width - n:], valid[row, width - n:] = org, val
    return LoopState(hidden, position_ids, valid, origin.masked_fill(~valid, -1), None, state.final_norm)


def _renumbered(state: LoopState) -> torch.Tensor:
    """[B, T] consecutive positions for the valid tokens, from each row's first position on."""
    big = torch.iinfo(state.position_ids.dtype).max
    first = state.position_ids.masked_fill(~state.valid, big).min(dim=1, keepdim=True).values  # [B, 1]
    first = first.masked_fill(first == big, 0)
    return (first + state.valid.long().cumsum(dim=1) - 1).clamp(min=0)  # padding keeps a harmless value


@dataclass
class _Segment:
    """Layers [first, last) share one token set; valid: [B, KV] bool keys they hold.

    shift: [B, 1] how far these layers' positions sit below the unpruned ones (0 unless renumbered).
    """

    first: int
    valid: torch.Tensor
    shift: torch.Tensor | None = None


class LLMLoop:
    """Prefill and decode steps over `model`'s decoder layers with token drops (one batch).

    model: the base decoder (LlamaModel, Qwen2Model, ...); lm_head: its output projection.
    """

    def __init__(self, model: nn.Module, lm_head: nn.Module, dropper: TokenDropper | None = None,
                 after_layer: Callable[[int, LoopState], torch.Tensor | None] | None = None) -> None:
        self.embed, self.layers, self.norm, self.rotary = compat.decoder_parts(model)
        self.config = model.config
        self.lm_head = lm_head
        self.dropper = dropper
        # after_layer(i, state) -> [B, T, H] added to the hidden states after prefill layer i, or None
        # (e.g. `in_llm.OriginResiduals`, Qwen3-VL's DeepStack features, which follow their tokens' origins)
        self.after_layer = after_layer
        self.impl = compat.attention_implementation(model.config)
        self.cache = compat.new_cache(model.config)
        self.segments: list[_Segment] = []
        self.next_position: torch.Tensor | None = None  # [B, 1]
        n = len(self.layers)
        for i in (dropper.drop_layers + dropper.probe_layers if dropper else ()):
            if not 0 <= i < n:
                raise ValueError(f"in-LLM pruning layer {i} is out of range for a {n}-layer LLM")

    def _mask(self, valid_keys: torch.Tensor, q_len: int, dtype: torch.dtype) -> torch.Tensor:
        """Layer mask: causal over the last q_len keys, no padding keys; padding rows see themselves."""
        b, kv = valid_keys.shape
        dev = valid_keys.device
        causal = torch.ones(q_len, kv, dtype=torch.bool, device=dev).tril(kv - q_len)  # [Q, KV]
        allowed = causal[None] & valid_keys[:, None, :]  # [B, Q, KV]
        if q_len > 1:  # a padding query with no visible key would give NaN rows: let it see itself
            diagonal = torch.arange(q_len, device=dev)[:, None] + (kv - q_len) == torch.arange(kv, device=dev)[None]
            allowed = allowed | diagonal[None]
        return compat.layer_attention_mask(allowed[:, None], self.impl, dtype)

    @torch.no_grad()
    def prefill(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                position_ids: torch.Tensor) -> torch.Tensor:
        """inputs_embeds [B, T, H] (left-padded), attention_mask [B, T], position_ids [B, T] -> last logits [B, V].

        position_ids may be M-RoPE ids [3, B, T] (Qwen-VL): the rotary tables are built from them, the
        methods see each token's 1-D sequence index as `position_ids` (and the ids as `mrope_ids`), and
        decode steps continue one past each row's largest position on all three axes.
        """
        b, t, _ = inputs_embeds.shape
        valid = attention_mask.bool()
        origin = torch.arange(t, device=valid.device).expand(b, t).masked_fill(~valid, -1)
        mrope = position_ids if position_ids.ndim == 3 else None
        if mrope is not None:
            position_ids = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # [B, T] sequence index
        rope_ids = position_ids if mrope is None else mrope
        rope32 = rope_tables(self.rotary, rope_ids) if self.dropper is not None else None  # for the probe only
        state = LoopState(inputs_embeds, position_ids, valid, origin, rope32, self.norm, mrope)
        if self.dropper is not None and hasattr(self.dropper, "begin"):
            self.dropper.begin(state)
        rope = self.rotary(inputs_embeds, rope_ids)  # in the model dtype, as the stock model runs
        drops = set(self.dropper.drop_layers) if self.dropper else set()
        probe_at = self.dropper.probe_layers if self.dropper else ()
        q_rows = self.dropper.q_rows if self.dropper else None
        renumber = bool(getattr(self.dropper, "renumber_positions", False))
        ahead = {i for i in probe_at if i in drops}  # scored on the tokens entering the drop layer
        probe = QKProbe({i: self.layers[i].self_attn for i in probe_at if i not in ahead}, q_rows=q_rows)
        geometry = HeadGeometry.of(self.layers[0].self_attn)
        zero = torch.zeros(b, 1, dtype=torch.long, device=valid.device)
        self.segments = [_Segment(0, state.valid, zero)]
        next_position = rope_ids.masked_fill(~valid, -1).reshape(-1, b, t).amax(dim=(0, 2))[:, None] + 1  # [B, 1]
        mask = self._mask(state.valid, t, inputs_embeds.dtype)
        with probe.attached():
            for i, layer in enumerate(self.layers):
                if i in drops:
                    captured = dict(probe.captured)
                    if i in ahead:
                        look = QKProbe({i: layer.self_attn}, q_rows=q_rows)
                        with look.attached():
                            compat.project_queries_keys(layer, state.hidden)
                        captured[i] = look.captured[i]
                    keep = self.dropper.keep(i, state, captured, geometry)
                    added = self.dropper.inserted(i, state) if hasattr(self.dropper, "inserted") else None
                    if mrope is not None and (renumber or not (added is None or all(a is None for a in added))):
                        raise ValueError("this in-LLM method renumbers positions or adds tokens, which the loop does "
                                         "not support with M-RoPE positions (Qwen-VL) yet")
                    if added is None or all(a is None for a in added):
                        state = _subset(state, keep)
                    else:  # tokens the method adds (SparseVLM's recycling) enter the hidden states here
                        if not renumber and any(a is not None and a.position_ids is None for a in added):
                            raise ValueError("an in-LLM method added tokens without position ids while keeping "
                                             "positions (give Inserted.position_ids or renumber_positions = True)")
                        state = _spliced(state, keep, added)
                        if not renumber:
                            state.rope = rope_tables(self.rotary, state.position_ids)
                    shift = self.segments[-1].shift
                    if renumber:
                        state.position_ids = _renumbered(state)
                        state.rope = rope_tables(self.rotary, state.position_ids)
                        last = state.position_ids.masked_fill(~state.valid, -1).max(dim=1, keepdim=True).values
                        shift = next_position - (last + 1)
                    rope = self.rotary(state.hidden, state.position_ids if mrope is None else state.mrope_ids)
                    self.segments.append(_Segment(i, state.valid, shift))
                    mask = self._mask(state.valid, state.valid.shape[1], inputs_embeds.dtype)
                state.hidden = compat.call_decoder_layer(
                    layer, state.hidden, attention_mask=mask, position_ids=state.position_ids,
                    position_embeddings=rope, cache=self.cache)
                if self.after_layer is not None:
                    added = self.after_layer(i, state)
                    if added is not None:
                        state.hidden = state.hidden + added.to(state.hidden)
        self.next_position = next_position
        return self.lm_head(self.norm(state.hidden[:, -1]))  # [B, H] -> [B, V]

    @torch.no_grad()
    def step(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """One decode step for every row: token_embeds [B, 1, H] -> logits [B, V]."""
        if getattr(self.dropper, "reselect", "prefill") == "step":
            raise ValueError("this in-LLM method selects again at every token (reselect=step): decode with "
                             "llm_loop.generate, which reruns the prefill per token, not with LLMLoop.step")
        pos = self.next_position
        ropes: dict[int, tuple] = {}  # segment -> its rotary tables (segments differ only when renumbered)
        ones = torch.ones(pos.shape[0], 1, dtype=torch.bool, device=pos.device)
        for seg in self.segments:
            seg.valid = torch.cat([seg.valid, ones], dim=1)
        hidden, seg_idx = token_embeds, 0
        for i, layer in enumerate(self.layers):
            while seg_idx + 1 < len(self.segments) and self.segments[seg_idx + 1].first <= i:
                seg_idx += 1
            seg = self.segments[seg_idx]
            seg_pos = pos - seg.shift  # [B, 1]
            if seg_idx not in ropes:
                ropes[seg_idx] = self.rotary(token_embeds, seg_pos)
            mask = compat.layer_attention_mask(seg.valid[:, None, None, :], self.impl, token_embeds.dtype)
            hidden = compat.call_decoder_layer(layer, hidden, attention_mask=mask, position_ids=seg_pos,
                                               position_embeddings=ropes[seg_idx], cache=self.cache)
        self.next_position = pos + 1
        return self.lm_head(self.norm(hidden[:, -1]))

    def kv_lengths(self) -> list[int]:
        """Keys stored per layer (shorter after each drop)."""
        return [compat.cache_length(self.cache, i) for i in range(len(self.layers))]


def _extended(loop: LLMLoop, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
              token: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The prefill inputs with `token` [B] appended to every row at its next position: [B, T] -> [B, T + 1]."""
    embeds = loop.embed(token)[:, None].to(inputs_embeds.dtype)  # [B, 1, H]
    ones = attention_mask.new_ones(attention_mask.shape[0], 1)
    nxt = loop.next_position.to(position_ids.dtype)  # [B, 1]; M-RoPE ids [3, B, T] take it on every axis
    nxt = nxt if position_ids.ndim == 2 else nxt[None].expand(position_ids.shape[0], -1, -1)
    return (torch.cat([inputs_embeds, embeds], dim=1), torch.cat([attention_mask, ones], dim=1),
            torch.cat([position_ids, nxt], dim=-1))


_GENERATE_ARGS = {"max_new_tokens", "do_sample", "temperature", "top_p", "top_k", "num_beams", "eos_token_id",
                  "pad_token_id", "use_cache", "generation_config", "output_logits", "return_dict_in_generate"}


@torch.no_grad()
def generate(loop: LLMLoop, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
             generation_config, **kwargs) -> torch.LongTensor:
    """Greedy or sampled decoding through `loop`; returns the new tokens [B, T_new].

    Follows transformers' `generate` for these options: finished rows are padded with the pad token,
    decoding stops when every row has produced an end token or after `max_new_tokens`. A dropper with
    `reselect == "step"` (FastV's evaluation) gets the whole sequence again at every new token: the
    loop reruns its prefill on the prompt and the tokens so far, with a fresh cache, instead of a step.
    With `return_dict_in_generate` it returns transformers' `GenerateDecoderOnlyOutput` instead, whose
    `sequences` are the new tokens and, with `output_logits`, `logits` the raw logits of each step
    (T_new x [B, V]).
    """
    from transformers.generation import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, \
        TopPLogitsWarper

    unknown = set(kwargs) - _GENERATE_ARGS
    if unknown:
        raise ValueError(f"in-LLM pruning decodes with its own loop, which does not take {sorted(unknown)}")
    config = kwargs.pop("generation_config", None) or generation_config
    get = lambda name, default=None: kwargs.get(name) if kwargs.get(name) is not None else \
        (getattr(config, name, None) if getattr(config, name, None) is not None else default)  # noqa: E731
    if get("num_beams", 1) != 1:
        raise ValueError("in-LLM pruning supports greedy decoding and sampling, not beam search (num_beams=1)")
    if kwargs.get("use_cache") is False:
        raise ValueError("in-LLM pruning always decodes with its KV cache (use_cache=True)")
    as_dict, keep_logits = bool(kwargs.get("return_dict_in_generate")), bool(kwargs.get("output_logits"))
    max_new = get("max_new_tokens", 20)
    eos = get("eos_token_id")
    eos = torch.tensor([eos] if isinstance(eos, int) else list(eos or []), device=inputs_embeds.device)
    pad = get("pad_token_id", int(eos[0]) if len(eos) else 0)
    sample = bool(get("do_sample", False))
    warpers = LogitsProcessorList()
    if sample:
        if get("temperature", 1.0) != 1.0:
            warpers.append(TemperatureLogitsWarper(get("temperature")))
        if get("top_k") and get("top_k") > 0:
            warpers.append(TopKLogitsWarper(get("top_k")))
        if get("top_p", 1.0) < 1.0:
            warpers.append(TopPLogitsWarper(get("top_p")))

    logits = loop.prefill(inputs_embeds, attention_mask, position_ids)
    rerun = getattr(loop.dropper, "reselect", "prefill") == "step"  # FastV's evaluation: select at every token
    b = inputs_embeds.shape[0]
    unfinished = torch.ones(b, dtype=torch.bool, device=inputs_embeds.device)
    out: list[torch.Tensor] = []
    raw: list[torch.Tensor] = []  # each step's logits [B, V], for output_logits
    for _ in range(max_new):
        if keep_logits:
            raw.append(logits)
        scores = logits.float()
        if sample:
            scores = warpers(torch.empty(b, 0, dtype=torch.long, device=scores.device), scores)
            token = torch.multinomial(scores.softmax(dim=-1), 1)[:, 0]
        else:
            token = scores.argmax(dim=-1)
        token = torch.where(unfinished, token, torch.full_like(token, pad))
        out.append(token)
        if len(eos):
            unfinished &= ~torch.isin(token, eos)
        if not unfinished.any() or len(out) == max_new:
            break
        if rerun:  # the whole sequence again, without a cache, as FastV's no-cache runs compute it
            inputs_embeds, attention_mask, position_ids = _extended(loop, inputs_embeds, attention_mask, position_ids,
                                                                    token)
            loop.cache = compat.new_cache(loop.config)
            logits = loop.prefill(inputs_embeds, attention_mask, position_ids)
        else:
            logits = loop.step(loop.embed(token)[:, None])
    tokens = torch.stack(out, dim=1) if out else torch.empty(b, 0, dtype=torch.long, device=inputs_embeds.device)
    if not as_dict:
        return tokens
    from transformers.generation import GenerateDecoderOnlyOutput

    return GenerateDecoderOnlyOutput(sequences=tokens, logits=tuple(raw) if keep_logits else None)
