"""The three headline ratios, measured side by side in one run (`python -m llava.bench --headline`).

P1  [CLS]-scoring overhead on the vision tower: our tower to layer -2 with the [CLS] row vs the same
    tower without scoring (paired rounds), next to LLaVA's full 24-layer SDPA tower and the original
    FasterVLM tower (eager, output_attentions: every map materialised).
P2  Time-to-first-token speedup at K=64 vs K=576, as a fraction of the FLOPs-predicted speedup,
    from a K sweep that also gives the table and the plot (plus the original path at K=64).
P3  Questions/s at batch 8 vs batch 1 on a medium model; the greedy answers must agree, bit for bit or
    up to numerical near-ties (`compare_answers`).
"""

from __future__ import annotations

import torch

from llava.pruning.base import SIGNAL_CLS_ATTN

from . import flops as F
from .measure import Clock, OtherLoad, PeakMemory, summarize
from .models import BenchBatch, with_llm_layers
from .stages import OriginalTower, PassResult, SignalTimer, run_ours
from .sweep import Config, Gate, add_speedups, paired_ratio, run_configs


# ---- P1 -------------------------------------------------------------------------------------------
@torch.no_grad()
def tower_overhead(model, images: torch.Tensor, *, rounds: int, warmup: int, device, gate: Gate | None = None,
                   log=print) -> dict:
    """Time four vision paths on the same weights and images, in rotated order per round."""
    gate = gate or Gate(retries=0)
    tower = model.get_vision_tower()
    original = OriginalTower(tower)
    clock = Clock(device)
    cls = frozenset({SIGNAL_CLS_ATTN})
    weight_dtype = tower.dtype
    variants = {
        "ours_no_scoring": ("ours, tower to layer -2, SDPA, no scoring", lambda: tower(images, needs=frozenset())),
        "ours_cls_scoring": ("ours, tower to layer -2, SDPA, [CLS]-row scoring", lambda: tower(images, needs=cls)),
        "llava_full_tower": ("LLaVA-1.5 tower: all layers, SDPA, output_hidden_states",
                             lambda: tower.vision_tower(pixel_values=images.to(weight_dtype), output_hidden_states=True)),
        "original_fastervlm": ("original FasterVLM tower: all layers, eager, output_attentions + output_hidden_states",
                               lambda: original(images)),
    }
    names = list(variants)
    memory = {}
    for name in names:
        for i in range(max(warmup, 1)):
            probe = PeakMemory(device)
            probe.start()
            out = variants[name][1]()
            probe.mark("tower")
            del out
        memory[name] = probe.finish()["tower"]
    times = {name: [] for name in names}
    loads = {name: [] for name in names}

    def timed(fn):
        load = OtherLoad().start()
        t0 = clock.now()
        out = fn()
        seconds = clock.now() - t0
        del out
        return seconds, load.stop()

    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, load = gate.run(lambda: timed(variants[name][1]), load_of=lambda x: x[1])
            times[name].append(seconds)
            loads[name].append(load)
        log(f"  P1 round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in names))

    timer = SignalTimer(tower, cls)
    with timer.capturing():
        tower(images, needs=cls)
    row_seconds = timer.time(clock, repeats=21)
    _, _, map_bytes = original(images)
    b, t, d = images.shape[0], tower.num_patches + 1, tower.hidden_size
    heads, elt = tower.config.num_attention_heads, tower.dtype.itemsize
    # What our scoring holds, all transient: the k output and q row of the scored layer (the probe), their
    # float32 copies and the [B, H, 1, T] probabilities; the result kept is the [B, N] float32 row.
    ours_bytes = b * t * d * elt + b * d * elt + b * t * d * 4 + b * d * 4 + b * heads * t * 4
    base = times["ours_no_scoring"]
    clean = {n: [gate.clean(x) for x in loads[n]] for n in names}
    both = lambda a, b: [p and q for p, q in zip(clean[a], clean[b])]  # noqa: E731
    dims = F.ModelDims.from_model(model)
    return {
        "images": b,
        "dtype": str(weight_dtype).replace("torch.", ""),
        "variants": {n: {"what": variants[n][0], "seconds": summarize(times[n], clean[n]),
                         "other_load": loads[n], "peak_memory_bytes": memory[n]} for n in names},
        "scoring_overhead": summarize([s / x - 1 for s, x in zip(times["ours_cls_scoring"], base)],
                                      both("ours_cls_scoring", "ours_no_scoring")),
        "cls_row_seconds": row_seconds,
        "cls_row_share": row_seconds / summarize(base, clean["ours_no_scoring"])["median"],
        "original_extra_vs_ours": summarize([o / s - 1 for o, s in zip(times["original_fastervlm"], times["ours_cls_scoring"])],
                                            both("original_fastervlm", "ours_cls_scoring")),
        "llava_full_extra_vs_ours": summarize([o / s - 1 for o, s in zip(times["llava_full_tower"], times["ours_no_scoring"])],
                                              both("llava_full_tower", "ours_no_scoring")),
        "original_extra_vs_llava_full": summarize([o / s - 1 for o, s in zip(times["original_fastervlm"], times["llava_full_tower"])],
                                                  both("original_fastervlm", "llava_full_tower")),
        "attention_map_bytes_original": map_bytes,
        "attention_map_bytes_original_fp32": dims.v_layers * b * heads * t * t * 4,
        "scoring_bytes_ours_transient": ours_bytes,
        "scoring_bytes_ours_kept": b * tower.num_patches * 4,
        "flops": {
            "ours_no_scoring": F.vision_flops(dims, b),
            "ours_cls_scoring": F.vision_flops(dims, b) + F.scoring_flops(dims, b, cls),
            "llava_full_tower": F.vision_flops(dims, b, dims.v_layers),
            "original_fastervlm": F.vision_flops(dims, b, dims.v_layers),
        },
    }


# ---- P2 -------------------------------------------------------------------------------------------
def k_sweep(model, batch: BenchBatch, ks: list[int], *, pruned_k: int, method: str, new_tokens: int,
            rounds: int, warmup: int, device, gate: Gate | None = None, log=print) -> tuple[list[dict], dict]:
    """Batch-1 K sweep (ours) plus the original path at `pruned_k`; P2 = TTFT at max(ks) over TTFT at pruned_k."""
    ks = sorted(set(ks) | {pruned_k}, reverse=True)
    configs = [Config("ours", method, k, 1) for k in ks] + [Config("original", "fastervlm", pruned_k, 1)]
    rows = run_configs(model, configs, {1: batch}, new_tokens=new_tokens, warmup=warmup, repeats=rounds,
                       device=device, gate=gate, log=log)
    add_speedups(rows)
    full = next(r for r in rows if r["kind"] == "ours" and r["k"] == max(ks))
    pruned = next(r for r in rows if r["kind"] == "ours" and r["k"] == pruned_k)
    ttft = paired_ratio(full, pruned, "ttft")
    prefill = paired_ratio(full, pruned, "prefill")
    pred_ttft = full["flops"]["ttft"] / pruned["flops"]["ttft"]
    pred_prefill = full["flops"]["prefill"] / pruned["flops"]["prefill"]
    p2 = {
        "k_full": max(ks), "k_pruned": min(ks),
        "ttft_speedup": ttft, "ttft_speedup_flops": pred_ttft, "ttft_fraction_of_flops": ttft["median"] / pred_ttft,
        "prefill_speedup": prefill, "prefill_speedup_flops": pred_prefill,
        "prefill_fraction_of_flops": prefill["median"] / pred_prefill,
        "stage_seconds": {r["label"]: {s: r["seconds"][s]["median"] for s in
                                       ("vision", "scoring", "select", "projector", "splice", "prefill", "ttft")}
                          for r in (full, pruned)},
        "stage_gflops": {r["label"]: {s: r["flops"][s] / 1e9 for s in
                                      ("vision", "scoring", "projector", "prefill", "ttft")} for r in (full, pruned)},
        # achieved GFLOP/s per stage: where time and FLOPs part ways, the measured speedup does too
        "stage_gflop_per_s": {r["label"]: {s: r["flops"][s] / 1e9 / r["seconds"][s]["median"]
                                           for s in ("vision", "projector", "prefill", "ttft") if r["seconds"][s]["median"]}
                              for r in (full, pruned)},
    }
    # Prediction that keeps each stage at the GFLOP/s it reached in the unpruned pass: it accounts for
    # the tower running slower per FLOP than the LLM, so what is left over is the LLM's loss of
    # efficiency on the short pruned sequence plus fixed per-pass costs.
    rate = {s: full["flops"][s] / full["seconds"][s]["median"] for s in ("vision", "projector", "prefill")}
    predicted_64 = sum(pruned["flops"][s] / rate[s] for s in rate) + sum(
        pruned["seconds"][s]["median"] for s in ("select", "splice"))
    p2["ttft_speedup_stage_rates"] = full["seconds"]["ttft"]["median"] / predicted_64
    orig = next(r for r in rows if r["kind"] == "original")
    p2["original_ttft_over_ours"] = paired_ratio(orig, pruned, "ttft")
    return rows, p2


# ---- P3 -------------------------------------------------------------------------------------------
def _stage_totals(results: list[PassResult]) -> dict:
    keys = ("vision", "select", "projector", "splice", "prefill", "decode", "e2e")
    return {k: sum(r.seconds[k] for r in results) for k in keys}


def compare_answers(singles: list[PassResult], batched: PassResult, dtype: torch.dtype, ulps: float = 2) -> dict:
    """Greedy answers one by one vs batched; classify each first divergence as a near-tie or a mismatch.

    Batch 1 and batch B take different matmul kernels on CPU (GEMV vs GEMM, different summation
    order), so logits differ by a few ulps of the compute dtype; where the top two logits are that
    close (random weights make such near-ties common in bf16), greedy picks can flip. A divergence
    is a near-tie when, at its first differing step, each run's own pick beats the other run's pick by
    at most `ulps` ulps of the top logit (in `dtype`); anything else is a mismatch, i.e. a real
    difference in what the batched pipeline computes.
    """
    eps = torch.finfo(dtype).eps
    rows = []
    for i, single in enumerate(singles):
        a, b = single.tokens[0], batched.tokens[i]
        if torch.equal(a, b):
            rows.append({"question": i, "equal": True})
            continue
        j = int(torch.nonzero(a != b)[0])
        v1, i1 = single.top_logits[0][0, j], single.top_logits[1][0, j]
        v8, i8 = batched.top_logits[0][i, j], batched.top_logits[1][i, j]
        gap1 = float(v1[0] - v1[i1 == b[j]][0]) if bool((i1 == b[j]).any()) else float("inf")
        gap8 = float(v8[0] - v8[i8 == a[j]][0]) if bool((i8 == a[j]).any()) else float("inf")
        ulp = eps * 2.0 ** float(torch.floor(torch.log2(v1[0].abs().clamp(min=1e-30))))
        rows.append({"question": i, "equal": False, "first_divergence": j, "token_batch1": int(a[j]),
                     "token_batched": int(b[j]), "gap_batch1": gap1, "gap_batched": gap8, "ulp": ulp,
                     "near_tie": max(gap1, gap8) <= ulps * ulp})
    return {
        "identical": sum(r["equal"] for r in rows),
        "near_ties": [r for r in rows if not r["equal"] and r["near_tie"]],
        "mismatches": [r for r in rows if not r["equal"] and not r["near_tie"]],
        "tie_tolerance_ulps": ulps,
    }


def batch_throughput(model, batch: BenchBatch, *, k: int, method: str, llm_layers: int, new_tokens: int,
                     rounds: int, warmup: int, device, gate: Gate | None = None, log=print) -> dict:
    """Questions/s of B questions one by one vs as one batch, on the first `llm_layers` LLM layers."""
    from llava.pruning import get_method

    view = with_llm_layers(model, llm_layers) if llm_layers < len(model.get_model().layers) else model
    m, clock = get_method(method), Clock(device)
    singles = [batch.row(i) for i in range(batch.size)]
    for _ in range(max(warmup, 1)):
        run_ours(view, singles[0], k, m, {}, 2, clock)
        run_ours(view, batch, k, m, {}, 2, clock)
    one, many = [], []
    for r in range(rounds):
        gate = gate or Gate(retries=0)
        runs = [lambda: one.append([gate.run(lambda: run_ours(view, s, k, m, {}, new_tokens, clock)) for s in singles]),
                lambda: many.append(gate.run(lambda: run_ours(view, batch, k, m, {}, new_tokens, clock)))]
        for run in (runs if r % 2 == 0 else runs[::-1]):
            run()
        log(f"  P3 round {r + 1}/{rounds}: batch 1 x {batch.size}: {sum(p.seconds['e2e'] for p in one[-1]):.2f} s, "
            f"batch {batch.size}: {many[-1].seconds['e2e']:.2f} s")
    tokens_many = many[-1].tokens
    check = compare_answers(one[-1], many[-1], view.dtype)
    t1 = [sum(p.seconds["e2e"] for p in passes) for passes in one]
    t8 = [p.seconds["e2e"] for p in many]
    other_load = {"batch1": [[p.other_load for p in passes] for passes in one], "batched": [p.other_load for p in many]}
    s1 = _stage_totals(one[-1]) if rounds == 1 else {k_: summarize([_stage_totals(p)[k_] for p in one])["median"]
                                                     for k_ in _stage_totals(one[0])}
    s8 = _stage_totals([many[-1]]) if rounds == 1 else {k_: summarize([_stage_totals([p])[k_] for p in many])["median"]
                                                        for k_ in _stage_totals([many[0]])}
    # Fixed cost per batch of questions (everything up to the first tokens) and cost per further token:
    fixed1, fixed8 = s1["e2e"] - s1["decode"], s8["e2e"] - s8["decode"]
    step1, step8 = s1["decode"] / max(1, new_tokens - 1), s8["decode"] / max(1, new_tokens - 1)
    speedup = summarize([a / b for a, b in zip(t1, t8)])
    goal = 3.0
    # speedup(n) = (fixed1 + (n - 1) step1) / (fixed8 + (n - 1) step8) reaches `goal` at this answer length n:
    crossover = None
    if goal * step8 < step1:
        crossover = 1 + max(0.0, (goal * fixed8 - fixed1) / (step1 - goal * step8))
    return {
        "questions": batch.size, "llm_layers": len(view.get_model().layers), "k": k, "method": method,
        "new_tokens": new_tokens, "prompt_lengths": [int(s.attention_mask.sum()) for s in singles],
        "seconds_batch1_total": summarize(t1), "seconds_batch8": summarize(t8), "other_load": other_load,
        "questions_per_s_batch1": batch.size / summarize(t1)["median"],
        "questions_per_s_batch8": batch.size / summarize(t8)["median"],
        "speedup": speedup,
        "answers_equal": check["identical"] == batch.size, "answers_identical": check["identical"],
        "answers_equal_up_to_ties": not check["mismatches"], "answer_check": check,
        "stage_seconds_batch1_total": s1, "stage_seconds_batch8": s8,
        "stage_speedup": {k_: s1[k_] / s8[k_] if s8[k_] > 0 else None for k_ in s1},
        "decode_step_seconds": {"batch1_per_question": step1 / batch.size, "batch8": step8},
        "decode_speedup": step1 / step8 if step8 else None,
        "speedup_limit_long_answers": step1 / step8 if step8 else None,
        "speedup_limit_no_decode": fixed1 / fixed8 if fixed8 else None,
        "answer_tokens_for_3x": crossover,
        "tokens": tokens_many.tolist(),
    }
