"""Efficiency per method and budget, side by side in one run (`python -m llava.bench --efficiency`).

For each method (pre-LLM or in-LLM, from the registry) and each visual-token budget: FLOPs (analytic,
counting what the LLM really runs: after an in-LLM method's drops every later layer is charged at
its own, shorter length, read from the dropper's report), the LLM prefill time, TTFT, decode time
per token, the KV-cache bytes measured from the cache's tensors, and peak memory. Configurations run
interleaved: after their warm-up passes (the last measures memory), round r runs every configuration
once in an order rotated by r, so a slow spell of a shared machine hits all of them alike and each
method can be paired with the unpruned pass of the same round.

Budgets: a method whose dropper takes its schedule from its arguments (PyramidDrop: no
`--visual-token-num`) runs once, at K = N with its schedule; every other method runs at each budget.
At a reduced LLM depth (`--llm-layers`) a method's default stage layers that do not fit (PyramidDrop's
8/16/24 of 32) are scaled by depth/32 (2/4/6 of 8); `--method-args METHOD:key=value,...` overrides.
A configuration that a method refuses is reported as skipped, with its error, not run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llava.pruning import get_method, parse_method_args
from llava.pruning.accounting import layer_average, pruning_stages, tokens_per_layer

from . import flops as F
from .measure import Clock, PeakMemory, summarize
from .models import BenchBatch
from .stages import PassResult, run_ours
from .sweep import Gate, paired_ratio

DEFAULT_METHODS = ("none", "fastervlm", "fastv", "pdrop", "dart")
DEFAULT_BUDGETS = (192, 128, 64)
REFERENCE_DEPTH = 32  # the LLaMA-7B depth the official stage layers are given for
NONE = "none"  # no pruning: all N visual tokens, the stock LLM


@dataclass(frozen=True)
class EffConfig:
    """One row: `method` ('none' or registered) at budget `k` (None: all tokens) with `args`."""

    method: str
    k: int | None
    args: tuple[tuple[str, object], ...] = ()
    scheduled: bool = False  # the schedule is in the args (no budget)

    @property
    def label(self) -> str:
        if self.method == NONE:
            return "none"
        if self.scheduled:
            return f"{self.method} ({','.join(f'{k}={_fmt(v)}' for k, v in self.args)})"
        return f"{self.method} K={self.k}"

    @property
    def registered(self) -> str:
        return "fastervlm" if self.method == NONE else self.method


def _fmt(value) -> str:
    return ":".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


def parse_method_overrides(items: list[str] | None) -> dict[str, dict]:
    """`["pdrop:layers=2:4:6,lambda=0.5", ...]` -> {"pdrop": {...}} (values parsed as --pruning-args)."""
    out: dict[str, dict] = {}
    for item in items or []:
        name, sep, text = item.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"--method-args {item!r}: expected METHOD:key=value,... (e.g. pdrop:layers=2:4:6)")
        out[name.strip()] = parse_method_args(text, name.strip())
    return out


def depth_args(method: str, num_layers: int) -> dict:
    """Defaults of `method` that name LLM layers beyond `num_layers`, scaled to that depth (by depth / 32)."""
    defaults = get_method(method).defaults
    layers = defaults.get("layers")
    if not isinstance(layers, (tuple, list)) or max(layers) < num_layers:
        return {}
    scaled, last = [], 0
    for layer in layers:
        last = max(last + 1, round(layer * num_layers / REFERENCE_DEPTH))
        scaled.append(last)
    if scaled[-1] >= num_layers:
        raise ValueError(f"{method}: its stage layers {list(layers)} cannot be scaled to a {num_layers}-layer LLM; "
                         f"pass --method-args {method}:layers=...")
    return {"layers": tuple(scaled)}


def plan(methods: list[str], budgets: list[int], num_layers: int, num_patches: int,
         overrides: dict[str, dict] | None = None) -> list[EffConfig]:
    """The rows of one run: 'none' once, scheduled in-LLM methods once at K = N, others at every budget."""
    overrides = overrides or {}
    rows = []
    for name in methods:
        if name == NONE:
            rows.append(EffConfig(NONE, None))
            continue
        method = get_method(name)
        args = {**depth_args(name, num_layers), **overrides.get(name, {})}
        items = tuple(sorted(args.items()))
        scheduled = method.stage == "in_llm" and not getattr(method.llm_pruner, "needs_budget", True)
        if scheduled:
            rows.append(EffConfig(name, num_patches, items, True))
        else:
            rows += [EffConfig(name, k, items) for k in budgets]
    return rows


def layer_lengths(facts: dict, num_layers: int) -> list[int]:
    """Padded positions each LLM layer runs on, from the row lengths and the dropper's report.

    Row b (one image per row in the bench) runs layer i on its real tokens minus the image tokens
    dropped before layer i; the batch is padded to its longest row (what the loop computes).
    """
    rows, entering = facts["row_lengths"], facts["visual_tokens"]
    if len(entering) != len(rows):
        raise ValueError(f"the benchmark puts one image in each row: {len(rows)} rows, {len(entering)} images")
    stages = pruning_stages(facts.get("in_llm"), len(entering))
    per_row = []
    for length, n, st in zip(rows, entering, stages):
        per_row.append([length - (n - kept) for kept in tokens_per_layer(n, st, num_layers)])
    return [max(r[i] for r in per_row) for i in range(num_layers)]


def pass_flops(d: F.ModelDims, cfg: EffConfig, result: PassResult, batch: int) -> dict[str, int]:
    """FLOPs per stage of one pass, the LLM charged layer by layer at the lengths it ran on."""
    facts = result.llm
    lengths = layer_lengths(facts, d.layers)
    method = get_method(cfg.registered)
    pruned_pre = method.stage == "pre_llm" and result.visual_tokens < d.num_patches
    out = F.pipeline_flops(d, batch, result.visual_tokens, result.length, result.new_tokens,
                           method.needs if pruned_pre else frozenset())
    return with_llm_flops(out, d, facts, lengths, batch, result.new_tokens)


def with_llm_flops(out: dict[str, int], d: F.ModelDims, facts: dict, lengths: list[int], batch: int,
                   new_tokens: int) -> dict[str, int]:
    """`out` (the pre-LLM stages' FLOPs) plus prefill (its in-LLM scoring included), decode, ttft and e2e,
    the LLM charged layer by layer at `lengths`."""
    out["prefill"] = F.prefill_flops_layers(d, batch, lengths)
    out["llm_scoring"] = 0
    if "in_llm" in facts:
        out["llm_scoring"] = F.in_llm_scoring_flops(d, batch, lengths, facts["probe_layers"], facts["drop_layers"],
                                                    facts["q_rows"])
    out["prefill"] += out["llm_scoring"]
    out["decode"] = F.decode_flops_layers(d, batch, lengths, new_tokens)
    out["ttft"] = sum(out[s] for s in ("vision", "scoring", "select", "projector", "splice", "prefill"))
    out["e2e"] = out["ttft"] + out["decode"]
    return out


@dataclass
class _Row:
    cfg: EffConfig
    passes: list[PassResult] = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    error: str | None = None


def _run(model, cfg: EffConfig, batch: BenchBatch, new_tokens: int, clock: Clock, memory: PeakMemory | None = None):
    k = None if cfg.method == NONE else cfg.k
    return run_ours(model, batch, k, get_method(cfg.registered), dict(cfg.args), new_tokens, clock, memory)


def run_efficiency(model, batch: BenchBatch, configs: list[EffConfig], *, new_tokens: int, warmup: int,
                   repeats: int, device, gate: Gate | None = None, clock: str = "wall", log=print,
                   run_pass=None, flops_of=None) -> list[dict]:
    """Warm up (the last warm-up pass measures memory), then `repeats` interleaved rounds; one dict per row.

    clock: 'wall' seconds, or 'cpu' (this process's CPU seconds, for a busy shared machine; `Clock`).
    run_pass(model, cfg, batch, new_tokens, clock, memory) -> PassResult and flops_of(dims, cfg, result,
    batch_size) -> FLOPs per stage replace the image pass and `pass_flops` (the video preset, `video.py`)."""
    clock, gate = Clock(device, clock), gate or Gate(retries=0)
    run_one = run_pass or _run
    rows = [_Row(cfg) for cfg in configs]
    for row in rows:
        try:
            for i in range(max(warmup, 1)):
                probe = PeakMemory(device) if i == max(warmup, 1) - 1 else None
                result = run_one(model, row.cfg, batch, new_tokens, clock, probe)
            row.memory = result.memory
            log(f"  warm-up {row.cfg.label}: TTFT {result.ttft:.2f} s, prefill {result.seconds['prefill']:.2f} s")
        except ValueError as err:  # a method that refuses this budget or model: reported, not run
            row.error = str(err)
            log(f"  skipped {row.cfg.label}: {err}")
    live = [r for r in rows if r.error is None]
    for r in range(repeats):
        for row in live[r % len(live):] + live[: r % len(live)] if live else []:
            row.passes.append(gate.run(lambda: run_one(model, row.cfg, batch, new_tokens, clock)))
        log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{x.cfg.label} {x.passes[-1].seconds['prefill']:.2f} s"
                                                       for x in live))
    dims = F.ModelDims.from_model(model)
    return [summarize_row(row, dims, batch.size, gate, model.dtype.itemsize, flops_of) for row in rows]


def summarize_row(row: _Row, d: F.ModelDims, batch: int, gate: Gate, element_size: int, flops_of=None) -> dict:
    """Statistics over the undisturbed passes, FLOPs, token accounting and sizes of one row."""
    cfg = row.cfg
    out = {"label": cfg.label, "method": cfg.method, "k": cfg.k, "args": {k: _fmt(v) for k, v in cfg.args},
           "scheduled": cfg.scheduled, "stage": "none" if cfg.method == NONE else get_method(cfg.method).stage}
    if row.error is not None:
        return {**out, "skipped": row.error}
    last = row.passes[-1] if row.passes else None
    if last is None:
        return {**out, "skipped": "no timed pass"}
    keep = [gate.clean(p.other_load) for p in row.passes]
    seconds = {s: summarize([p.seconds[s] for p in row.passes], keep)
               for s in ("vision", "select", "projector", "splice", "prefill", "decode")}
    seconds["ttft"] = summarize([p.ttft for p in row.passes], keep)
    seconds["decode_per_token"] = summarize([p.decode_per_token for p in row.passes], keep)
    lengths = layer_lengths(last.llm, d.layers)
    stages = pruning_stages(last.llm.get("in_llm"), len(last.llm["visual_tokens"]))
    per_image = [tokens_per_layer(n, st, d.layers) for n, st in zip(last.llm["visual_tokens"], stages)]
    return {
        **out,
        "visual_tokens": last.llm["visual_tokens"],
        "prune_layers": [[l for l, _ in st] for st in stages],
        "visual_tokens_after_layers": [[k for _, k in st] for st in stages],
        "layer_averaged_visual_tokens": sum(layer_average(t) for t in per_image) / len(per_image),
        "prompt_length": last.length, "layer_lengths": lengths, "kv_lengths": last.llm.get("kv_lengths"),
        "new_tokens": last.new_tokens,
        "seconds": seconds,
        "flops": (flops_of or pass_flops)(d, cfg, last, batch),
        "kv_cache_bytes": last.kv_cache_bytes,
        "kv_cache_bytes_analytic": F.kv_cache_bytes_layers(d, batch, lengths, element_size),
        "peak_memory_bytes": row.memory,
        "other_load": [p.other_load for p in row.passes],
        "tokens": last.tokens.tolist(),
    }


def add_ratios(rows: list[dict]) -> None:
    """Each row's LLM prefill and TTFT speedup over the 'none' row: measured (median of the per-round
    ratios, rounds paired in time) and FLOPs-predicted, and their quotient."""
    ref = next((r for r in rows if r["method"] == NONE and "skipped" not in r), None)
    if ref is None:
        return
    for row in rows:
        if "skipped" in row:
            continue
        for key in ("prefill", "ttft"):
            measured = paired_ratio(ref, row, key)["median"]
            predicted = ref["flops"][key] / row["flops"][key]
            row[f"{key}_speedup"] = measured
            row[f"{key}_speedup_flops"] = predicted
            row[f"{key}_fraction_of_flops"] = measured / predicted if predicted else None


def fastv_check(rows: list[dict], goal: float = 0.90, pairs: dict | None = None) -> dict | None:
    """FastV's measured LLM prefill speedup as a share of its FLOPs-predicted one, at every budget it ran.

    With `pairs` (`fastv_prefill_pairs`) the verdict is theirs (prefill passes seconds apart); the
    table rows' ratios (whole passes, a round apart) are kept as `in_table`.
    """
    fastv = [r for r in rows if r["method"] == "fastv" and "skipped" not in r and "prefill_speedup" in r]
    if not fastv and not pairs:
        return None
    in_table = {r["k"]: {"measured": r["prefill_speedup"], "predicted": r["prefill_speedup_flops"],
                         "fraction": r["prefill_fraction_of_flops"]} for r in fastv}
    per_k = pairs["per_budget"] if pairs else in_table
    worst = min(per_k.values(), key=lambda v: v["fraction"])
    return {"goal": goal, "source": "prefill pairs" if pairs else "table rounds", "per_budget": per_k,
            "in_table": in_table, "smallest_budget": min(per_k), "worst_fraction": worst["fraction"],
            "met": all(v["fraction"] >= goal for v in per_k.values()), "pairs": pairs}


# ---- FastV's prefill speedup, measured in tight pairs -----------------------------------------------
def fastv_prefill_pairs(model, batch: BenchBatch, budgets: list[int], *, rounds: int, device, clock: str = "wall",
                        args: dict | None = None, gate: Gate | None = None, log=print) -> dict:
    """The LLM prefill alone, unpruned vs FastV at each budget, timed in rounds of adjacent passes.

    The images go through the tower and projector once; each pass then splices the same tokens and
    times only the prefill call (`_Decoder.prefill`: the stock forward for 'none', the LLM loop that
    drops tokens for FastV), so the passes compared are seconds apart and share the machine's state.
    Round r runs none and every budget in an order rotated by r. Returns per budget the median of
    the per-round time ratios, the FLOPs-predicted ratio (per-layer lengths from the dropper's report,
    plus FastV's scoring row) and their quotient.
    """
    from llava.pruning import PruningConfig

    from .stages import _Decoder, _encoded, llm_facts

    timer, gate = Clock(device, clock), gate or Gate(retries=0)
    d = F.ModelDims.from_model(model)
    tower, projector = model.get_vision_tower(), model.mm_projector
    with_args = dict(args or {})
    projected = projector(tower(batch.images).features.to(next(projector.parameters()).dtype))  # [B, N, H]
    n = tower.num_patches
    names = ["none"] + [f"fastv K={k}" for k in budgets]
    cases = {"none": (PruningConfig(), None)}
    cases.update({f"fastv K={k}": (PruningConfig("fastv", k, method_args=with_args), k) for k in budgets})

    def one(name: str):
        cfg, k = cases[name]
        mm = model.prepare_multimodal_inputs(batch.input_ids, None, batch.attention_mask, padding_side="left",
                                             encoded=_encoded(projected, None, n, k))
        decoder = _Decoder(model, mm, cfg)
        from .measure import OtherLoad

        load = OtherLoad().start()
        t0 = timer.now()
        decoder.prefill(mm)
        seconds = timer.now() - t0
        return seconds, load.stop(), llm_facts(decoder, mm)

    facts = {name: one(name)[2] for name in names}  # warm-up, and the lengths each case runs on
    times: dict[str, list[float]] = {name: [] for name in names}
    clean: dict[str, list[bool]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, load, _ = gate.run(lambda: one(name), load_of=lambda x: x[1])
            times[name].append(seconds)
            clean[name].append(gate.clean(load))
        log(f"  FastV prefill round {r + 1}/{rounds}: " + ", ".join(f"{x} {times[x][-1]:.2f} s" for x in names))
    flops = {name: F.prefill_flops_layers(d, batch.size, layer_lengths(f, d.layers))
             + (F.in_llm_scoring_flops(d, batch.size, layer_lengths(f, d.layers), f["probe_layers"], f["drop_layers"],
                                       f["q_rows"]) if "in_llm" in f else 0) for name, f in facts.items()}
    out = {"rounds": rounds, "clock": clock, "seconds": {x: summarize(times[x], clean[x]) for x in names},
           "layer_lengths": {x: layer_lengths(facts[x], d.layers) for x in names}, "flops": flops, "per_budget": {}}
    for k, name in zip(budgets, names[1:]):
        keep = [p and q for p, q in zip(clean["none"], clean[name])]
        measured = summarize([a / b for a, b in zip(times["none"], times[name])], keep)
        predicted = flops["none"] / flops[name]
        out["per_budget"][k] = {"measured": measured["median"], "measured_p10": measured["p10"],
                                "measured_p90": measured["p90"], "predicted": predicted,
                                "fraction": measured["median"] / predicted}
    return out
