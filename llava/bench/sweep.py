"""Run a list of configurations (method x K x batch, plus the original path) interleaved, and summarise.

Every configuration first gets its untimed warm-up passes (the last one measures memory), then the
timed repeats run round-robin: round r runs every configuration once, in an order rotated by r, so
a slow spell on a shared machine hits all configurations alike and adjacent passes can be paired.
"""

from __future__ import annotations

from dataclasses import dataclass

from llava.pruning import get_method

from . import flops as F
from .measure import Clock, PeakMemory, summarize
from .models import BenchBatch
from .stages import STAGES, OriginalTower, PassResult, run_ours, run_original


@dataclass
class Gate:
    """Re-run a timed pass while other processes took more than `max_other_load` of the CPU (shared machines).

    Before each of at most `retries` re-runs it waits up to `wait_s` for the machine to go quiet;
    `discarded` counts the passes thrown away. A pass still disturbed after that is kept but marked
    (`clean` is False), and statistics leave it out when undisturbed passes exist.
    """

    max_other_load: float = 0.10
    retries: int = 3
    wait_s: float = 30.0
    discarded: int = 0

    def clean(self, load: float | None) -> bool:
        return load is None or load <= self.max_other_load

    def run(self, fn, load_of=lambda r: r.other_load):
        from .measure import wait_until_quiet

        result = fn()
        for _ in range(self.retries):
            if self.clean(load_of(result)):
                break
            self.discarded += 1
            if self.wait_s > 0:
                wait_until_quiet(self.max_other_load, self.wait_s, log=lambda _msg: None)
            result = fn()
        return result


@dataclass(frozen=True)
class Config:
    """One benchmark configuration. kind: 'ours' or 'original'; k None keeps all tokens."""

    kind: str
    method: str
    k: int | None
    batch: int

    @property
    def label(self) -> str:
        name = "original FasterVLM" if self.kind == "original" else self.method
        return f"{name} K={self.k if self.k is not None else 'all'} B={self.batch}"


def run_pass(model, cfg: Config, batch: BenchBatch, method_args: dict, new_tokens: int, clock: Clock,
             original: OriginalTower | None, memory: PeakMemory | None = None) -> PassResult:
    if cfg.kind == "original":
        return run_original(model, original, batch, cfg.k, new_tokens, clock, memory)
    return run_ours(model, batch, cfg.k, get_method(cfg.method), method_args, new_tokens, clock, memory)


def run_configs(model, configs: list[Config], batches: dict[int, BenchBatch], *, method_args: dict | None = None,
                new_tokens: int, warmup: int, repeats: int, device, gate: Gate | None = None, log=print) -> list[dict]:
    """Warm up, measure memory, then time `repeats` interleaved rounds; one summary dict per config."""
    clock = Clock(device)
    gate = gate or Gate(retries=0)
    method_args = method_args or {}
    original = OriginalTower(model.get_vision_tower()) if any(c.kind == "original" for c in configs) else None
    memory = {}
    for cfg in configs:
        for i in range(max(warmup, 1)):
            probe = PeakMemory(device) if i == max(warmup, 1) - 1 else None
            result = run_pass(model, cfg, batches[cfg.batch], method_args, new_tokens, clock, original, probe)
        memory[cfg] = result.memory
        log(f"  warm-up {cfg.label}: e2e {result.seconds['e2e']:.2f} s")
    passes: dict[Config, list[PassResult]] = {cfg: [] for cfg in configs}
    for r in range(repeats):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for cfg in order:
            passes[cfg].append(gate.run(lambda: run_pass(model, cfg, batches[cfg.batch], method_args, new_tokens,
                                                         clock, original)))
        log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{c.label} {passes[c][-1].ttft:.2f} s" for c in configs)
            + (f" ({gate.discarded} passes re-run so far: machine busy)" if gate.discarded else ""))
    dims = F.ModelDims.from_model(model)
    return [summarize_config(cfg, passes[cfg], memory[cfg], dims, model, gate) for cfg in configs]


def summarize_config(cfg: Config, passes: list[PassResult], memory: dict, dims: F.ModelDims, model,
                     gate: Gate | None = None) -> dict:
    """Stage statistics (seconds, over the undisturbed passes), rates, sizes and analytic FLOPs of one configuration."""
    last = passes[-1]
    keep = [(gate or Gate()).clean(p.other_load) for p in passes]
    stats = {s: summarize([p.seconds[s] for p in passes], keep) for s in STAGES}
    stats["ttft"] = summarize([p.ttft for p in passes], keep)
    stats["e2e"] = summarize([p.seconds["e2e"] for p in passes], keep)
    stats["decode_per_token"] = summarize([p.decode_per_token for p in passes], keep)
    method = get_method(cfg.method)
    pruned = cfg.kind == "original" or (method.stage == "pre_llm" and last.visual_tokens < dims.num_patches)
    needs = method.needs if cfg.kind == "ours" and pruned else frozenset()
    flops = F.pipeline_flops(dims, cfg.batch, last.visual_tokens, last.length, last.new_tokens, needs,
                             original=cfg.kind == "original")
    e2e = stats["e2e"]["median"]
    return {
        "label": cfg.label, "kind": cfg.kind, "method": cfg.method, "k": cfg.k, "batch": cfg.batch,
        "visual_tokens": last.visual_tokens, "prompt_length": last.length, "new_tokens": last.new_tokens,
        "seconds": stats,
        "questions_per_s": cfg.batch / e2e if e2e else None,
        "kv_cache_bytes": last.kv_cache_bytes,
        "kv_cache_bytes_analytic": F.kv_cache_bytes(dims, cfg.batch, last.length, model.dtype.itemsize),
        "attention_map_bytes": last.attention_map_bytes,
        "peak_memory_bytes": memory,
        "cpu_busy": summarize([p.cpu_busy for p in passes if p.cpu_busy is not None])["median"],
        "other_load": [p.other_load for p in passes],
        "flops": flops,
        "tokens": last.tokens.tolist(),
    }


def add_speedups(rows: list[dict]) -> None:
    """Measured and FLOPs-predicted TTFT speedup of each row over our unpruned row of the same method and batch."""
    for row in rows:
        same = [r for r in rows if r["kind"] == "ours" and r["method"] == row["method"] and r["batch"] == row["batch"]]
        if not same:
            continue
        ref = max(same, key=lambda r: r["visual_tokens"])
        row["speedup_vs"] = ref["label"]
        row["ttft_speedup"] = ref["seconds"]["ttft"]["median"] / row["seconds"]["ttft"]["median"]
        row["ttft_speedup_flops"] = ref["flops"]["ttft"] / row["flops"]["ttft"]


def paired_ratio(a: dict, b: dict, key: str = "ttft") -> dict:
    """Statistics of a/b over repeats of the same round (adjacent in time), for two summary rows;
    rounds where either pass was disturbed are left out when undisturbed pairs exist."""
    sa, sb = a["seconds"][key], b["seconds"][key]
    return summarize([x / y for x, y in zip(sa["values"], sb["values"])],
                     [p and q for p, q in zip(sa["kept"], sb["kept"])])

