"""Attention dispersion: how concentrated the LLM's attention over the image is, vs CLIP's [CLS] attention.

For every sample (first human turn, prefill only, all 576 visual tokens) it takes
  - the last prompt token's head-mean attention over the image tokens at one LLM layer (--layer, 2), and
  - the vision tower's [CLS] attention over the patches (head mean, the selected layer -2),
renormalises each to shares over the N image tokens and describes them (llava.analysis.stats):
  share_50 / share_90  fraction of tokens (largest first) holding 50% / 90% of the attention,
  entropy              Shannon entropy / log N (1 = uniform, 0 = one token),
  top1                 the largest share,
plus image_mass, the part of the raw attention that fell on the image tokens at all. Averaged over
samples, with the mean cumulative-share curve and a histogram of max-normalised scores (fixed bins).

    python -m llava.analysis.attn_dispersion --model-path liuhaotian/llava-v1.5-7b \
        --data-file playground/data/analysis/llava_v1_5_mix1k.jsonl --image-folder playground/data \
        --layer 2 --output-dir outputs/analysis/attn_dispersion
    python -m llava.analysis.attn_dispersion --replot outputs/analysis/attn_dispersion/attn_dispersion_stats.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from . import common
from .attention import PrefillAttention, resolve_layers
from .stats import cumulative_share, dispersion_summary, log_bin_edges, log_histogram, max_normalized

SOURCES = ("llm", "cls")
SUMMARY_KEYS = ("share_50", "share_90", "entropy", "top1", "image_mass")
STATS_FILE = "attn_dispersion_stats.json"
SAMPLES_CSV, SUMMARY_CSV = "attn_dispersion_per_sample.csv", "attn_dispersion_summary.csv"
DEFINITIONS = {
    "llm": "last prompt token -> image tokens, head-mean softmax attention of LLM layer `layer` "
           "(causal + padding masks)",
    "cls": "vision tower [CLS] -> patches, head-mean attention of mm_vision_select_layer",
    "shares": "p_j = s_j / sum_k s_k over the N image tokens",
    "share_50": "min k/N such that the k largest p_j sum to >= 0.5",
    "share_90": "min k/N such that the k largest p_j sum to >= 0.9",
    "entropy": "-sum_j p_j ln p_j / ln N",
    "top1": "max_j p_j",
    "image_mass": "sum_j s_j before renormalising (share of the query's attention that falls on the image)",
    "cumulative": "mean over samples of c[k-1] = sum of the k largest p_j, k = 1..N",
    "histogram": "counts of s_j / max_k s_k in fixed log-spaced bins, summed over samples; "
                 "'below' counts values under the first edge",
}


class DispersionAccumulator:
    """Per-sample summaries (a few numbers each) plus fixed-size running sums for curves and histograms."""

    def __init__(self, layer: int, num_tokens: int, edges: np.ndarray) -> None:
        self.layer, self.edges = layer, edges
        self.cumulative = {s: np.zeros(num_tokens) for s in SOURCES}
        self.hist = {s: np.zeros(len(edges) - 1, dtype=np.int64) for s in SOURCES}
        self.below = {s: 0 for s in SOURCES}
        self.per_sample: list[dict] = []

    def add(self, sample_id: str, result: PrefillAttention) -> None:
        scores = {"llm": result.layers[self.layer].last_token, "cls": result.cls_attn}
        row: dict = {"id": sample_id}
        for source, values in scores.items():
            s = values.double().cpu().numpy()
            summary = dispersion_summary(s)
            summary["image_mass"] = float(s.sum())
            row.update({f"{source}_{k}": summary[k] for k in SUMMARY_KEYS})
            self.cumulative[source] += cumulative_share(s)
            counts, below = log_histogram(max_normalized(s), self.edges)
            self.hist[source] += counts
            self.below[source] += below
        self.per_sample.append(row)

    def means(self) -> dict[str, dict[str, float]]:
        n = len(self.per_sample)
        return {source: {k: (float(np.mean([r[f"{source}_{k}"] for r in self.per_sample])) if n else None)
                         for k in SUMMARY_KEYS} for source in SOURCES}


def build_stats(acc: DispersionAccumulator, meta: dict, log: common.RunLog) -> dict:
    n = len(acc.per_sample)
    return {
        "analysis": "attn_dispersion",
        **meta,
        **log.as_dict(),
        "layer": acc.layer,
        "num_image_tokens": len(acc.cumulative["llm"]),
        "definitions": DEFINITIONS,
        "summary_mean": acc.means(),
        "cumulative": {s: (acc.cumulative[s] / n).tolist() if n else None for s in SOURCES},
        "histogram": {"edges": acc.edges.tolist(), **{s: acc.hist[s].tolist() for s in SOURCES},
                      "below": dict(acc.below)},
        "per_sample": acc.per_sample,
    }


def write_tables(stats: dict, out: Path) -> None:
    header = ["id"] + [f"{s}_{k}" for s in SOURCES for k in SUMMARY_KEYS]
    common.write_csv(out / SAMPLES_CSV, header, ([r[h] for h in header] for r in stats["per_sample"]))
    common.write_csv(out / SUMMARY_CSV, ["source", "layer", "num_samples", *SUMMARY_KEYS],
                     ([s, stats["layer"] if s == "llm" else stats["vision_select_layer"], stats["num_samples"],
                       *(stats["summary_mean"][s][k] for k in SUMMARY_KEYS)] for s in SOURCES))


# ---- plots -----------------------------------------------------------------------------------------


def plot_all(stats: dict, out: Path) -> list[Path]:
    """Draw the cumulative-share curves and the histograms; returns their paths."""
    plt = common.pyplot()
    out.mkdir(parents=True, exist_ok=True)
    n = stats["num_image_tokens"]
    labels = {"llm": f"LLM layer {stats['layer']}, last prompt token",
              "cls": f"{stats.get('reference_signal', 'CLIP [CLS]')}, vision layer {stats['vision_select_layer']}"}
    colors = {"llm": "tab:blue", "cls": "tab:orange"}
    subtitle = f"{Path(str(stats.get('model_path'))).name}, {stats['num_samples']} samples, {n} image tokens"
    paths = []

    # 1. mean cumulative attention share vs token share
    fig, ax = plt.subplots(figsize=(6.8, 5.6), constrained_layout=True)
    x = np.arange(0, n + 1) / n  # k/N for k = 0..N, starting from (0, 0)
    ax.plot([0, 1], [0, 1], color="0.6", ls=":", lw=1, label="uniform attention")
    for source in SOURCES:
        curve = np.concatenate([[0.0], stats["cumulative"][source]])
        m = stats["summary_mean"][source]
        ax.plot(x, curve, color=colors[source], lw=2,
                label=f"{labels[source]}\n50% mass in {100 * m['share_50']:.1f}% of tokens, "
                      f"90% in {100 * m['share_90']:.1f}%; entropy {m['entropy']:.3f}")
    for level in (0.5, 0.9):
        ax.axhline(level, color="0.75", lw=0.8, ls="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("share of image tokens (sorted by attention, largest first)")
    ax.set_ylabel("cumulative share of the attention")
    ax.set_title(f"Attention dispersion: cumulative attention share\n({subtitle})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    paths.append(out / "attn_dispersion_cumulative.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # 2. histograms of max-normalised scores on log-log axes
    hist = stats["histogram"]
    edges = np.asarray(hist["edges"])
    fig, ax = plt.subplots(figsize=(7.2, 5.2), constrained_layout=True)
    for source in SOURCES:
        counts = np.asarray(hist[source], dtype=float)
        total = counts.sum() + hist["below"][source]
        frac = counts / total if total else counts
        below = ""
        if total and hist["below"][source]:
            below = f"; {100 * hist['below'][source] / total:.2f}% below {edges[0]:.0e}"
        ax.stairs(np.where(frac > 0, frac, np.nan), edges, color=colors[source], lw=1.8, label=labels[source] + below)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(edges[0], 1)
    ax.set_xlabel("attention score / the image's largest score (log scale)")
    ax.set_ylabel("fraction of image tokens per bin (log scale)")
    ax.set_title(f"Attention dispersion: max-normalised scores, {len(edges) - 1} log-spaced bins\n({subtitle})",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3, which="major")
    paths.append(out / "attn_dispersion_hist.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


# ---- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Attention dispersion analysis (docs/ANALYSIS.md)")
    common.add_common_args(parser, "outputs/analysis/attn_dispersion")
    parser.add_argument("--layer", type=int, default=2, help="LLM layer whose last-token attention is analysed")
    parser.add_argument("--hist-min-exponent", type=int, default=-6,
                        help="histogram range 10**E .. 1 of max-normalised scores (10 bins per decade)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Measure (or --replot) the attention dispersion; returns the stats dict."""
    parser = build_parser()
    args = parser.parse_args(argv)
    common.check_run_args(parser, args)
    common.setup_logging()
    if args.replot:
        stats = common.read_stats(args.replot, "attn_dispersion")
        paths = plot_all(stats, Path(args.output_dir))
        common.logger.info("redrew %s", ", ".join(str(p) for p in paths))
        return stats
    if args.hist_min_exponent >= 0:
        parser.error("--hist-min-exponent must be negative")

    tokenizer, model, processor = common.load_model(args)
    (layer,) = resolve_layers([args.layer], model.config.num_hidden_layers)
    acc = DispersionAccumulator(layer, model.get_vision_tower().num_patches, log_bin_edges(args.hist_min_exponent))
    records = common.read_records(args.data_file, args.num_samples)
    # Only the last query row of one layer is needed, and the forward stops after that layer.
    log = common.measure(model, tokenizer, processor, records, args, [layer], False, acc.add, "attn_dispersion")
    stats = build_stats(acc, common.run_meta(args, model), log)
    out = Path(args.output_dir)
    common.write_json(out / STATS_FILE, stats)
    if log.num_measured == 0:
        raise SystemExit(f"no sample could be measured ({len(log.skipped)} skipped); see {out / STATS_FILE}")
    write_tables(stats, out)
    paths = plot_all(stats, out)
    common.logger.info("wrote %s, %s, %s and %s", out / STATS_FILE, SAMPLES_CSV, SUMMARY_CSV,
                       ", ".join(p.name for p in paths))
    return stats


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
