"""Write benchmark results: JSON (everything), a Markdown table, and a PNG of speed vs K."""

from __future__ import annotations

import json
from pathlib import Path

STAGE_COLUMNS = ("vision", "scoring", "select", "projector", "splice", "prefill", "ttft", "decode_per_token", "e2e")


def _ms(stat: dict | None) -> str:
    if not stat or stat.get("median") is None:
        return "-"
    med, lo, hi = (1e3 * stat[k] for k in ("median", "p10", "p90"))
    if stat.get("n", 0) > 1:
        return f"{med:.1f} [{lo:.1f}-{hi:.1f}]"
    return f"{med:.1f}"


def _mb(value: int | None) -> str:
    """Megabytes, 10^6 bytes."""
    return "-" if value is None else f"{value / 1e6:.1f}"


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.3f}%" if abs(x) < 0.01 else f"{100 * x:.1f}%"


def runs_table(rows: list[dict]) -> str:
    """One line per configuration: stage times in ms (median [p10-p90]), sizes, FLOPs and speedups."""
    head = ["config", "visual tokens", "prompt len"] + [f"{c} ms" for c in STAGE_COLUMNS] + [
        "q/s", "KV cache MB", "peak mem MB", "TTFT GFLOPs", "TTFT speedup (FLOPs-predicted)", "CPU busy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        s = r["seconds"]
        speed = "-"
        if "ttft_speedup" in r:
            speed = f"{r['ttft_speedup']:.2f}x ({r['ttft_speedup_flops']:.2f}x)"
        cells = [r["label"], str(r["visual_tokens"]), str(r["prompt_length"])] + [_ms(s.get(c)) for c in STAGE_COLUMNS] + [
            f"{r['questions_per_s']:.3f}" if r.get("questions_per_s") else "-",
            _mb(r["kv_cache_bytes"]), _mb(r["peak_memory_bytes"].get("pass")),
            f"{r['flops']['ttft'] / 1e9:.1f}", speed,
            "-" if r.get("cpu_busy") is None else f"{r['cpu_busy']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_markdown(result: dict) -> str:
    """The P1/P2/P3 summary and the K-sweep table."""
    p1, p2, p3 = result["p1"], result["p2"], result["p3"]
    s = result["settings"]
    out = [f"# Headline ({result['machine']['cpu']}, {result['machine']['torch_threads']} threads, "
           f"{s['dtype']}, torch {result['machine']['torch']})", ""]
    out += ["## P1: [CLS] scoring overhead on the vision tower", "",
            f"{p1['images']} image, {s['arch']} tower (CLIP-L/14-336 dims), {p1['dtype']}, {s['rounds_p1']} paired rounds.", "",
            "| vision path | ms (median [p10-p90]) | GFLOPs | peak mem MB |", "|---|---|---|---|"]
    for name, v in p1["variants"].items():
        out.append(f"| {v['what']} | {_ms(v['seconds'])} | {p1['flops'][name] / 1e9:.1f} | {_mb(v['peak_memory_bytes'])} |")
    ov = p1["scoring_overhead"]
    out += ["",
            f"- scoring overhead (with / without, paired): **{_pct(ov['median'])}** [p10 {_pct(ov['p10'])}, p90 {_pct(ov['p90'])}]; "
            f"the [CLS]-row computation alone: {1e3 * p1['cls_row_seconds']:.2f} ms = {_pct(p1['cls_row_share'])} of the tower",
            f"- original FasterVLM tower vs ours with scoring: +{_pct(p1['original_extra_vs_ours']['median'])} time; "
            f"its attention maps: {_mb(p1['attention_map_bytes_original'])} MB per image in {p1['dtype']} "
            f"({_mb(p1['attention_map_bytes_original_fp32'])} MB in fp32); ours keeps no map "
            f"({p1['scoring_bytes_ours_transient'] / 1e6:.2f} MB transient, {p1['scoring_bytes_ours_kept']} bytes kept)", ""]
    out += ["## P2: time-to-first-token speedup, K=%d vs K=%d" % (p2["k_pruned"], p2["k_full"]), "",
            f"{s['arch']} dims with {s['llm_layers']} LLM layers, batch 1, {s['rounds_p2']} paired rounds.", "",
            f"- TTFT speedup **{p2['ttft_speedup']['median']:.2f}x** [p10 {p2['ttft_speedup']['p10']:.2f}, p90 "
            f"{p2['ttft_speedup']['p90']:.2f}] vs FLOPs-predicted {p2['ttft_speedup_flops']:.2f}x: "
            f"**{_pct(p2['ttft_fraction_of_flops'])}** of predicted",
            f"- LLM prefill alone: {p2['prefill_speedup']['median']:.2f}x vs {p2['prefill_speedup_flops']:.2f}x predicted "
            f"({_pct(p2['prefill_fraction_of_flops'])})",
            f"- predicted with each stage kept at its unpruned GFLOP/s: {p2['ttft_speedup_stage_rates']:.2f}x"]
    if "original_ttft_over_ours" in p2:
        out.append(f"- original FasterVLM path / ours at K={p2['k_pruned']}: "
                   f"{p2['original_ttft_over_ours']['median']:.3f}x TTFT")
    out.append("- achieved GFLOP/s: " + "; ".join(
        f"{label}: " + ", ".join(f"{k} {v:.0f}" for k, v in st.items()) for label, st in p2["stage_gflop_per_s"].items()))
    out += ["", "| stage | " + " | ".join(f"{k} ms" for k in p2["stage_seconds"]) + " | "
            + " | ".join(f"{k} GFLOPs" for k in p2["stage_gflops"]) + " |",
            "|---|" + "---|" * (2 * len(p2["stage_seconds"]))]
    for stage in ("vision", "scoring", "select", "projector", "splice", "prefill", "ttft"):
        ms = [f"{1e3 * v[stage]:.1f}" for v in p2["stage_seconds"].values()]
        gf = [f"{v[stage]:.1f}" if stage in v else "-" for v in p2["stage_gflops"].values()]
        out.append(f"| {stage} | " + " | ".join(ms + gf) + " |")
    out += ["", f"## P3: questions/s, batch {p3['questions']} vs batch 1", "",
            f"{s['arch']} width with {p3['llm_layers']} LLM layers, K={p3['k']} ({p3['method']}), "
            f"{p3['new_tokens']} greedy tokens per answer, prompt lengths {p3['prompt_lengths']}.", "",
            f"- batch 1: {p3['questions_per_s_batch1']:.3f} q/s; batch {p3['questions']}: {p3['questions_per_s_batch8']:.3f} q/s; "
            f"speedup **{p3['speedup']['median']:.2f}x**",
            f"- answers: {p3['answers_identical']}/{p3['questions']} identical; "
            f"{len(p3['answer_check']['near_ties'])} diverge at a near-tie (top-2 logits within "
            f"{p3['answer_check']['tie_tolerance_ulps']:g} ulps of {s['dtype']}); "
            f"**{len(p3['answer_check']['mismatches'])} mismatches**"
            + "".join(f"; q{t['question']} at token {t['first_divergence']}: gaps {t['gap_batch1']:.4g} / "
                      f"{t['gap_batched']:.4g} (ulp {t['ulp']:.4g})" for t in p3['answer_check']['near_ties']),
            f"- decode step: {p3['decode_speedup']:.2f}x faster per question at batch {p3['questions']}; "
            f"everything before decode: {p3['speedup_limit_no_decode']:.2f}x"
            + ("" if p3["answer_tokens_for_3x"] is None else
               f"; 3x would need answers of >= {p3['answer_tokens_for_3x']:.0f} tokens"), "",
            "| stage | batch 1 (sum of %d) s | batch %d s | speedup |" % (p3["questions"], p3["questions"]), "|---|---|---|---|"]
    for stage, v in p3["stage_seconds_batch1_total"].items():
        sp = p3["stage_speedup"][stage]
        out.append(f"| {stage} | {v:.3f} | {p3['stage_seconds_batch8'][stage]:.3f} | {'-' if sp is None else f'{sp:.2f}x'} |")
    out += ["", "## K sweep (batch 1)", "", "Stage times in ms, median [p10-p90]; 'vision' includes 'scoring'; "
            "TTFT = vision + select + projector + splice + prefill.", "", runs_table(result["runs"]), ""]
    return "\n".join(out)


def sweep_markdown(result: dict) -> str:
    s = result["settings"]
    return "\n".join([
        f"# Benchmark ({result['machine']['cpu']}, {result['machine']['torch_threads']} threads, {s['dtype']})", "",
        f"Model: {s['model']}; LLM layers: {s['llm_layers']}; {s['repeats']} repeats after {s['warmup']} warm-up; "
        f"{s['max_new_tokens']} new tokens.", "",
        "Stage times in ms, median [p10-p90]; 'vision' includes 'scoring'; TTFT = vision + select + projector + "
        "splice + prefill; peak memory: " + result["memory_measure"] + ".", "",
        runs_table(result["runs"]), "",
    ])


def plot_speed_vs_k(rows: list[dict], path: Path, title: str) -> None:
    """Left: TTFT vs K per method/batch (median, p10-p90 bars; also prefill when there is one group), each
    with its FLOPs-predicted curve (dotted, scaled to the largest K). Right: measured vs predicted speedup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["kind"] == "ours":
            groups.setdefault((r["method"], r["batch"]), []).append(r)
    keys = ("ttft", "prefill") if len(groups) == 1 else ("ttft",)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, ((method, batch), rs) in enumerate(groups.items()):
        rs = sorted(rs, key=lambda r: r["visual_tokens"])
        ks, ref = [r["visual_tokens"] for r in rs], rs[-1]
        for j, key in enumerate(keys):
            color = colors[(n * len(keys) + j) % len(colors)]
            med = [r["seconds"][key]["median"] for r in rs]
            err = [[m - r["seconds"][key]["p10"] for m, r in zip(med, rs)],
                   [r["seconds"][key]["p90"] - m for m, r in zip(med, rs)]]
            ax.errorbar(ks, med, yerr=err, fmt="o-" if key == "ttft" else "s--", capsize=3, color=color,
                        label=f"{method} B={batch}: {key}")
            pred = [ref["seconds"][key]["median"] * r["flops"][key] / ref["flops"][key] for r in rs]
            ax.plot(ks, pred, ":", color=color)
        color = colors[(n * len(keys)) % len(colors)]
        ax2.plot(ks, [ref["seconds"]["ttft"]["median"] / r["seconds"]["ttft"]["median"] for r in rs], "o-",
                 color=color, label=f"{method} B={batch}")
        ax2.plot(ks, [ref["flops"]["ttft"] / r["flops"]["ttft"] for r in rs], "x:", color=color)
    originals = [r for r in rows if r["kind"] == "original"]
    if originals:
        ax.plot([r["visual_tokens"] for r in originals], [r["seconds"]["ttft"]["median"] for r in originals], "r*",
                markersize=12, label="original FasterVLM path, B=1: ttft")
    proxies = [Line2D([], [], color="gray", linestyle="-", marker="o", label="measured (median)"),
               Line2D([], [], color="gray", linestyle=":", label="FLOPs-predicted, scaled at the largest K")]
    ax.set_xlabel("visual tokens K per image")
    ax.set_ylabel("seconds")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(handles=ax.get_legend_handles_labels()[0] + proxies, fontsize=7)
    ax2.set_xlabel("visual tokens K per image")
    ax2.set_ylabel(f"TTFT speedup over K={max(r['visual_tokens'] for r in rows)} (ratio of medians)")
    ax2.set_title("measured (solid) vs FLOPs-predicted (dotted)", fontsize=10)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(result: dict, out_dir: Path, stem: str, markdown: str, title: str, plot=None) -> dict[str, Path]:
    """JSON, Markdown and PNG (`plot(rows, path, title)`, default `plot_speed_vs_k`) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md", "png": out_dir / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=1, default=str))
    paths["md"].write_text(markdown)
    (plot or plot_speed_vs_k)(result["runs"], paths["png"], title)
    return paths


# ---- efficiency per method (llava.bench.efficiency) ------------------------------------------------
def _x(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}x"


def efficiency_table(rows: list[dict]) -> str:
    """FasterVLM's efficiency-table layout: one row per method and budget, the unpruned row first."""
    head = ["Method", "budget K", "visual tokens in", "after pruning layers", "layer-avg tokens", "GFLOPs (LLM prefill)",
            "FLOPs ↓", "LLM prefill ms", "prefill speedup (FLOPs-predicted)", "measured / predicted", "TTFT ms",
            "TTFT speedup (FLOPs)", "decode ms/token", "KV cache MB", "peak mem MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ref = next((r for r in rows if r["method"] == "none" and "skipped" not in r), None)
    for r in rows:
        if "skipped" in r:
            lines.append("| " + " | ".join([r["label"], str(r["k"] or "-"), f"skipped: {r['skipped']}"]
                                           + [""] * (len(head) - 3)) + " |")
            continue
        s, f = r["seconds"], r["flops"]
        after = "; ".join(", ".join(f"L{l}: {k}" for l, k in zip(ls, ks)) for ls, ks in
                          zip(r["prune_layers"], r["visual_tokens_after_layers"]) if ls) or "-"
        drop = "-" if ref is None else f"{100 * (1 - f['prefill'] / ref['flops']['prefill']):.1f}%"
        cells = [
            r["label"], "-" if r["method"] == "none" or r["scheduled"] else str(r["k"]),
            ", ".join(map(str, r["visual_tokens"])), after, f"{r['layer_averaged_visual_tokens']:.1f}",
            f"{f['prefill'] / 1e9:.1f}", drop, _ms(s["prefill"]),
            f"{_x(r.get('prefill_speedup'))} ({_x(r.get('prefill_speedup_flops'))})",
            _pct(r.get("prefill_fraction_of_flops")), _ms(s["ttft"]),
            f"{_x(r.get('ttft_speedup'))} ({_x(r.get('ttft_speedup_flops'))})",
            f"{1e3 * s['decode_per_token']['median']:.1f}", _mb(r["kv_cache_bytes"]),
            _mb(r["peak_memory_bytes"].get("pass")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def efficiency_markdown(result: dict) -> str:
    s, check = result["settings"], result.get("fastv_check")
    out = [f"# Efficiency per method ({result['machine']['cpu']}, {result['machine']['torch_threads']} threads, "
           f"{s['dtype']}, torch {result['machine']['torch']})", "",
           f"Model: {s['model']}, {s['llm_layers']} LLM layers; batch {s['batch']}; {s['repeats']} interleaved rounds "
           f"after {s['warmup']} warm-up; {s['max_new_tokens']} new tokens. Times ("
           + ("this process's CPU seconds, all threads" if s.get("clock") == "cpu" else "wall clock")
           + "): median [p10-p90] over the rounds; "
           "speedups: median of the per-round ratios to the 'none' pass of the same round. GFLOPs: the LLM prefill "
           "with every layer at the length it ran on (plus the in-LLM scoring); peak memory: "
           + result["memory_measure"] + ".", "", efficiency_table(result["runs"]), ""]
    if check:
        fmt = lambda d: "; ".join(f"K={k}: {v['measured']:.2f}x / {v['predicted']:.2f}x = "  # noqa: E731
                                  f"{100 * v['fraction']:.1f}%" for k, v in sorted(d.items(), reverse=True))
        pairs = check.get("pairs")
        where = (f"the prefill alone in {pairs['rounds']} rounds of adjacent passes" if pairs
                 else "the table's rounds")
        out += [f"FastV LLM prefill speedup over none, measured / FLOPs-predicted ({where}): "
                f"{fmt(check['per_budget'])} (goal >= {100 * check['goal']:.0f}%: "
                f"{'met' if check['met'] else 'NOT met'}).", ""]
        if pairs and check["in_table"]:
            out += [f"In the table's rounds (whole passes, a round apart): {fmt(check['in_table'])}.", ""]
    return "\n".join(out)


def plot_efficiency(rows: list[dict], path: Path, title: str) -> None:
    """Left: LLM prefill time vs budget per method (median, p10-p90 bars), each with its FLOPs-predicted
    time (dotted: the unpruned time scaled by the FLOPs ratio). Right: LLM prefill GFLOPs vs budget.
    Methods without a budget (a schedule in their arguments) sit at their layer-averaged tokens (x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    live = [r for r in rows if "skipped" not in r]
    ref = next((r for r in live if r["method"] == "none"), None)
    n_all = max((max(r["visual_tokens"]) for r in live), default=576)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = list(dict.fromkeys(r["method"] for r in live))
    for i, method in enumerate(methods):
        rs = [r for r in live if r["method"] == method]
        xs = [n_all if method == "none" else (r["layer_averaged_visual_tokens"] if r["scheduled"] else r["k"])
              for r in rs]
        order = sorted(range(len(rs)), key=lambda j: xs[j])
        rs, xs = [rs[j] for j in order], [xs[j] for j in order]
        color, marker = colors[i % len(colors)], "x" if rs[0]["scheduled"] else "o"
        med = [r["seconds"]["prefill"]["median"] for r in rs]
        err = [[m - r["seconds"]["prefill"]["p10"] for m, r in zip(med, rs)],
               [r["seconds"]["prefill"]["p90"] - m for m, r in zip(med, rs)]]
        ax.errorbar(xs, med, yerr=err, fmt=marker + "-", capsize=3, color=color, label=rs[0]["label"].split(" K=")[0])
        if ref is not None and method != "none":
            ax.plot(xs, [ref["seconds"]["prefill"]["median"] * r["flops"]["prefill"] / ref["flops"]["prefill"]
                         for r in rs], ":", color=color)
        ax2.plot(xs, [r["flops"]["prefill"] / 1e9 for r in rs], marker + "-", color=color, label=rs[0]["label"].split(" K=")[0])
    for a, ylabel in ((ax, "LLM prefill seconds (dotted: FLOPs-predicted)"), (ax2, "LLM prefill GFLOPs")):
        a.set_xlabel("visual-token budget K (scheduled methods: layer-averaged tokens)")
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    ax2.set_title("FLOPs counted per layer at the length it runs on", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
