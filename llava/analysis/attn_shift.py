"""Attention shift: how much attention each image token receives in every LLM layer, vs CLIP's [CLS] attention.

For every sample (first human turn, prefill only, all 576 visual tokens) and every LLM layer, the
head-mean attention each image token j (raster position 0..575) receives is measured four ways:

  all_queries    sum over queries i >= j (image and text, causal) of A[i, j], / #queries i >= j
  image_queries  sum over image queries j <= i < end of A[i, j],               / #such queries
  text_queries   sum over text queries i >= end (after the image) of A[i, j],  / #such queries
  last_token     A[last, j], the last prompt token (the one that predicts the first answer token)

with A the softmax attention of that layer averaged over heads. Next to it, the vision tower's
[CLS] attention (head mean, the selected layer -2) of the same image. Every statistic is averaged
over samples (each sample weighs the same). Running sums only: memory does not grow with the data.

    python -m llava.analysis.attn_shift --model-path liuhaotian/llava-v1.5-7b \
        --data-file playground/data/analysis/llava_v1_5_mix1k.jsonl --image-folder playground/data \
        --output-dir outputs/analysis/attn_shift
    python -m llava.analysis.attn_shift --replot outputs/analysis/attn_shift/attn_shift_stats.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import common
from .attention import PrefillAttention, resolve_layers

KINDS = ("all_queries", "image_queries", "text_queries", "last_token")
KIND_TITLES = {
    "all_queries": "(a) from all later queries (per query that sees it)",
    "image_queries": "(b) from image queries (per query that sees it)",
    "text_queries": "(c) from text queries after the image (mean)",
    "last_token": "(d) from the last prompt token",
}
STATS_FILE, CSV_FILE = "attn_shift_stats.json", "attn_shift.csv"
DEFINITIONS = {
    "A": "softmax(q k^T / sqrt(d)) of one LLM layer with the causal and padding masks, averaged over heads",
    "all_queries": "sum_{i >= j} A[i, j] / #{valid queries i >= j}  (includes i = j)",
    "image_queries": "sum_{j <= i < end} A[i, j] / #{image queries i >= j}  (includes i = j)",
    "text_queries": "sum_{i >= end} A[i, j] / #{text queries after the image}",
    "last_token": "A[last prompt token, j]",
    "cls_attn": "vision tower [CLS] -> patch attention at mm_vision_select_layer, head mean "
                "(sums to 1 - [CLS] self-attention)",
    "average": "mean over samples; position j is the raster index (row = j // grid, col = j % grid)",
}


def default_plot_layers(num_layers: int) -> list[int]:
    """A spread: first, third, middle and last layer (0, 2, 15, 31 for a 32-layer LLM)."""
    return sorted({0, min(2, num_layers - 1), max(num_layers // 2 - 1, 0), num_layers - 1})


class ShiftAccumulator:
    """Running sums [layers, N] per kind and [N] for [CLS]; averages on demand."""

    def __init__(self, num_layers: int, num_tokens: int) -> None:
        self.sums = {kind: np.zeros((num_layers, num_tokens)) for kind in KINDS}
        self.counts = {kind: 0 for kind in KINDS}
        self.cls_sum = np.zeros(num_tokens)
        self.cls_count = 0

    def add(self, _sample_id: str, result: PrefillAttention) -> None:
        for kind in KINDS:
            rows = torch.stack([getattr(result.layers[i], kind) for i in range(len(self.sums[kind]))])
            rows = rows.double().cpu().numpy()  # L x [N] -> [L, N], one device-to-host copy
            if np.all(np.isfinite(rows)):  # text_queries is undefined when no text follows the image
                self.sums[kind] += rows
                self.counts[kind] += 1
        self.cls_sum += result.cls_attn.double().cpu().numpy()
        self.cls_count += 1

    def means(self) -> tuple[dict[str, np.ndarray | None], np.ndarray | None]:
        llm = {kind: self.sums[kind] / self.counts[kind] if self.counts[kind] else None for kind in KINDS}
        return llm, (self.cls_sum / self.cls_count if self.cls_count else None)


def _grid(n: int) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"{n} image tokens do not form a square grid")
    return side


# ---- outputs ---------------------------------------------------------------------------------------


def build_stats(acc: ShiftAccumulator, meta: dict, log: common.RunLog, plot_layers: Sequence[int]) -> dict:
    llm, cls = acc.means()
    n = acc.cls_sum.shape[0]
    return {
        "analysis": "attn_shift",
        **meta,
        **log.as_dict(),
        "num_image_tokens": n,
        "grid": _grid(n),
        "plot_layers": list(plot_layers),
        "definitions": DEFINITIONS,
        "samples_per_kind": {**acc.counts, "cls_attn": acc.cls_count},
        "llm": {kind: (v.tolist() if v is not None else None) for kind, v in llm.items()},
        "cls_attn": cls.tolist() if cls is not None else None,
    }


def csv_rows(stats: dict):
    """source, layer, position, row, col, value (cls_attn rows carry the vision layer, e.g. -2)."""
    grid = stats["grid"]
    for kind in KINDS:
        for layer, values in enumerate(stats["llm"][kind] or []):
            for j, v in enumerate(values):
                yield kind, layer, j, j // grid, j % grid, f"{v:.8g}"
    for j, v in enumerate(stats["cls_attn"] or []):
        yield "cls_attn", stats["vision_select_layer"], j, j // grid, j % grid, f"{v:.8g}"


def _log_norm(values: np.ndarray):
    from matplotlib.colors import LogNorm

    positive = values[np.isfinite(values) & (values > 0)]
    vmax = float(positive.max()) if positive.size else 1.0
    vmin = max(float(positive.min()) if positive.size else vmax * 1e-6, vmax * 1e-6)
    return LogNorm(vmin=vmin, vmax=vmax)


def _log_colorbar(fig, im, ax) -> None:
    """A slim log colour bar with a few readable ticks: decades, plus 2 and 5 when it spans under two decades."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter, NullLocator

    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    decades = np.log10(im.norm.vmax / im.norm.vmin)
    subs = (1.0,) if decades >= 2 else (1.0, 2.0, 5.0)
    bar.ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs))
    bar.ax.yaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.ax.yaxis.set_minor_formatter(NullFormatter())
    bar.ax.tick_params(labelsize=7)


def plot_all(stats: dict, out: Path, plot_layers: Sequence[int]) -> list[Path]:
    """Draw the four figures; returns their paths."""
    plt = common.pyplot()
    out.mkdir(parents=True, exist_ok=True)
    llm = {kind: np.asarray(v) for kind, v in stats["llm"].items() if v is not None}
    cls = np.asarray(stats["cls_attn"])
    grid, n, num_layers = stats["grid"], stats["num_image_tokens"], stats["num_llm_layers"]
    ref = stats.get("reference_signal", "CLIP [CLS]")  # a tower without [CLS]: its stand-in
    plot_layers = resolve_layers(plot_layers, num_layers)
    subtitle = f"{Path(str(stats.get('model_path'))).name}, {stats['num_samples']} samples"
    xlabel = f"image token position (raster order: row = j // {grid}, col = j % {grid})"
    paths = []

    # 1. layer x position heat-maps, one panel per kind
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), constrained_layout=True)
    for ax, kind in zip(axes.flat, KINDS):
        if kind not in llm:
            ax.set_axis_off()
            continue
        im = ax.imshow(llm[kind], aspect="auto", origin="lower", interpolation="nearest", norm=_log_norm(llm[kind]),
                       extent=(-0.5, n - 0.5, -0.5, num_layers - 0.5), cmap="viridis")
        ax.set_title(KIND_TITLES[kind], fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("LLM layer")
        ax.set_xticks(range(0, n + 1, grid * max(grid // 6, 1)))
        ax.set_yticks(range(0, num_layers, max(num_layers // 8, 1)))
        fig.colorbar(im, ax=ax, label="attention received (log scale)")
    fig.suptitle(f"Attention shift: attention each image token receives, per LLM layer ({subtitle})")
    paths.append(out / "attn_shift_position.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. curves over positions for the chosen layers, with the [CLS] attention for reference
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), constrained_layout=True, sharex=True)
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(plot_layers)))
    for ax, kind in zip(axes.flat, KINDS):
        if kind not in llm:
            ax.set_axis_off()
            continue
        rows_x = np.arange(grid) * grid + (grid - 1) / 2  # centre position of each raster row
        for color, layer in zip(colors, plot_layers):
            values = llm[kind][layer]
            ax.plot(np.arange(n), values, color=color, lw=0.6, alpha=0.3)
            ax.plot(rows_x, values.reshape(grid, grid).mean(axis=1), color=color, lw=1.8, marker="o", ms=2.5,
                    label=f"LLM layer {layer}")
        ax.plot(rows_x, cls.reshape(grid, grid).mean(axis=1), color="0.3", lw=1.4, ls="--",
                label=f"{ref} (layer {stats['vision_select_layer']})")
        ax.set_yscale("log")
        ax.set_title(KIND_TITLES[kind], fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("attention received (log scale)")
        ax.grid(alpha=0.3, which="major")
        ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"Attention shift: attention vs image-token position; thin: per token, thick: mean of each "
                 f"{grid}-token image row ({subtitle})", fontsize=11)
    paths.append(out / "attn_shift_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 3. 24 x 24 maps: one row per kind, one column per chosen layer
    kinds = [k for k in KINDS if k in llm]
    fig, axes = plt.subplots(len(kinds), len(plot_layers), figsize=(3.2 * len(plot_layers) + 1, 3 * len(kinds) + 0.6),
                             constrained_layout=True, squeeze=False)
    for r, kind in enumerate(kinds):
        for c, layer in enumerate(plot_layers):
            ax = axes[r, c]
            values = llm[kind][layer].reshape(grid, grid)
            im = ax.imshow(values, cmap="viridis", norm=_log_norm(values), interpolation="nearest")
            ax.set_title(f"layer {layer}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(KIND_TITLES[kind].replace(" (", "\n("), fontsize=8)
            _log_colorbar(fig, im, ax)
    fig.suptitle(f"Attention each image patch receives, on the {grid}x{grid} patch grid (log colour; {subtitle})",
                 fontsize=10)
    paths.append(out / "attn_shift_maps.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 4. the [CLS] attention
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True,
                                   gridspec_kw={"width_ratios": [1, 1.6]})
    im = ax0.imshow(cls.reshape(grid, grid), cmap="viridis", interpolation="nearest")
    ax0.set_title(f"{ref} on the {grid}x{grid} patch grid", fontsize=10)
    ax0.set_xlabel("patch column")
    ax0.set_ylabel("patch row")
    fig.colorbar(im, ax=ax0, label=f"{ref} (head mean)")
    ax1.plot(np.arange(n), cls, color="0.2", lw=0.8)
    ax1.axhline(1 / n, color="tab:red", ls=":", lw=1, label=f"uniform 1/{n}")
    ax1.set_yscale("log")
    ax1.set_xlabel(xlabel, fontsize=8)
    ax1.set_ylabel(f"{ref} (log scale)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    fig.suptitle(f"{ref}, vision layer {stats['vision_select_layer']} ({subtitle})", fontsize=10)
    paths.append(out / "cls_attn.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


# ---- CLI ------------------------------------------------------------------------------------------


def parse_layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--layers must be comma-separated integers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Attention shift analysis (docs/ANALYSIS.md)")
    common.add_common_args(parser, "outputs/analysis/attn_shift")
    parser.add_argument("--layers", type=str, default=None,
                        help="LLM layers drawn as curves and 24x24 maps, e.g. 0,2,15,31 (default: a spread)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Measure (or --replot) the attention shift; returns the stats dict."""
    parser = build_parser()
    args = parser.parse_args(argv)
    common.check_run_args(parser, args)
    common.setup_logging()
    layers = parse_layers(args.layers)
    if args.replot:
        stats = common.read_stats(args.replot, "attn_shift")
        paths = plot_all(stats, Path(args.output_dir), layers or stats["plot_layers"])
        common.logger.info("redrew %s", ", ".join(str(p) for p in paths))
        return stats

    tokenizer, model, processor = common.load_model(args)
    num_layers = model.config.num_hidden_layers
    plot_layers = resolve_layers(layers or default_plot_layers(num_layers), num_layers)
    acc = ShiftAccumulator(num_layers, model.get_vision_tower().num_patches)
    records = common.read_records(args.data_file, args.num_samples)
    log = common.measure(model, tokenizer, processor, records, args, range(num_layers), True, acc.add, "attn_shift")
    stats = build_stats(acc, common.run_meta(args, model), log, plot_layers)
    out = Path(args.output_dir)
    common.write_json(out / STATS_FILE, stats)
    if log.num_measured == 0:
        raise SystemExit(f"no sample could be measured ({len(log.skipped)} skipped); see {out / STATS_FILE}")
    common.write_csv(out / CSV_FILE, ["source", "layer", "position", "row", "col", "value"], csv_rows(stats))
    paths = plot_all(stats, out, plot_layers)
    common.logger.info("wrote %s, %s and %s", out / STATS_FILE, out / CSV_FILE, ", ".join(p.name for p in paths))
    return stats


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
