"""Signal dispersion: how concentrated each vision signal is over a view's patches, family by family.

The pruning signals ([CLS] attention where the tower has one, and the signals that stand in for it
without [CLS]: `mean_attn`, `mean_attn_deep`, `pooled_query_attn`, `feature_norm`) are measured on
the views each family's registration names (`llava.analysis.family_grids`: LLaVA-1.5's padded square,
the base view of NeXT and OneVision; Qwen's image once registered). Each view's scores are one
distribution over its N patches, described by `stats.concentration_summary`:
  share_50 / share_90  fraction of patches (largest first) holding 50% / 90% of the mass,
  entropy              Shannon entropy / ln N (1 = uniform),
  effective_share      exp(entropy) / N: the share of patches a uniform score of that entropy uses,
  gini                 Gini coefficient of the shares (0 = uniform),
  top_mass             mass of the top --top-fraction (10%) of patches,
  top1                 the largest share.
On towers with [CLS], each stand-in is also compared with the [CLS] row: the overlap of their top
--overlap-fraction (25%) sets and the Spearman rank correlation.

Sources: checkpoints (`--model-path`), tiny ones built on the fly (`--families`), and towers at a real
checkpoint's dimensions with random weights (`--random-tower`), which exercise the measurement at
full size but say nothing about what trained towers attend to.

    python -m llava.analysis.signal_dispersion --model-path /ckpt/llava-v1.5-7b --model-path /ckpt/ov-7b \
        --images playground/data/coco/val2014 --num-images 200 --output-dir outputs/analysis/signal_dispersion
    python -m llava.analysis.signal_dispersion --random-tower clip-l-336,siglip-so400m-384 --out-png docs/x.png
    python -m llava.analysis.signal_dispersion --replot outputs/analysis/signal_dispersion/signal_dispersion_stats.json
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from . import common
from .stats import concentration_summary, cumulative_share, spearman, top_overlap

CLS = "cls_attn"
STAND_INS = ("mean_attn", "mean_attn_deep", "pooled_query_attn", "feature_norm")
SUMMARY_KEYS = ("share_50", "share_90", "entropy", "effective_share", "gini", "top_mass", "top1")
AGREEMENT_KEYS = ("overlap_with_cls", "spearman_with_cls")
STATS_FILE, SUMMARY_CSV = "signal_dispersion_stats.json", "signal_dispersion_summary.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_IMAGES = str(common.REPO / "assets" / "samples")
CURVE_X = np.linspace(0, 1, 201)  # where the mean cumulative curves are sampled
RANDOM_NOTE = ("random weights: these numbers exercise the measurement at real dimensions; "
               "they say nothing about what a trained tower attends to")


@dataclass
class Source:
    """One tower to measure: scores(image, names) -> {name: [V, N]} for the views it describes."""

    label: str
    has_cls: bool
    scores: Callable
    random_weights: bool


def family_sources(paths: Sequence[str], families: Sequence[str], work_dir: Path, device: str) -> list[Source]:
    """Sources from checkpoint folders and from tiny checkpoints of registered families."""
    from llava.kept_map import weights_are_random

    from .family_grids import get_grid_family, load

    folders = [(None, p) for p in paths] + [(name, None) for name in families]
    out = []
    for name, path in folders:
        if path is None:
            path = get_grid_family(name).tiny(work_dir / name)
        family, loaded = load(path, device)
        if family.signal_scores is None:
            raise ValueError(f"{path}: family {family.name!r} registers no signal_scores hook "
                             "(llava/analysis/family_grids.py)")
        out.append(Source(f"{family.name} ({Path(path).name})", family.has_cls,
                          lambda image, names, f=family, m=loaded: f.signal_scores(m, image, names),
                          weights_are_random(path)))
    return out


# ---- towers at real dimensions, random weights -------------------------------------------------------------


def _random_clip(seed: int):
    """LLaVA-1.5's tower shape: CLIP ViT-L/14 at 336 px, read at layer -2, images padded to a square."""
    import torch
    from transformers import CLIPImageProcessorPil, LlavaConfig

    from llava.mm_utils import expand2square
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

    torch.manual_seed(seed)
    config = LlavaConfig().vision_config  # CLIP-L/14-336 (24 layers, 1024 wide), as LLaVA-1.5 uses
    tower = CLIPVisionTower.from_config(config.to_dict(), select_layer=-2).eval()
    processor = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    mean = tuple(int(255 * x) for x in processor.image_mean)
    pixels = lambda image: processor(expand2square(image, mean), return_tensors="pt")["pixel_values"]  # noqa: E731
    return "CLIP-L/14-336, layer -2 (LLaVA-1.5 shape)", True, tower, pixels


def _random_siglip(seed: int):
    """OneVision's tower shape: SigLIP so400m at 384 px, 26 layers, the last one read (the base view)."""
    import torch
    from transformers import LlavaOnevisionConfig, SiglipImageProcessorPil

    from llava.model.multimodal_encoder.siglip_encoder import SiglipVisionTower

    torch.manual_seed(seed)
    config = LlavaOnevisionConfig().vision_config  # so400m-patch14-384 with OneVision's 26 layers
    tower = SiglipVisionTower.from_config(config.to_dict(), select_layer=-1).eval()
    processor = SiglipImageProcessorPil(size={"height": 384, "width": 384})
    pixels = lambda image: processor(image, return_tensors="pt")["pixel_values"]  # noqa: E731
    return "SigLIP so400m-384, 26 layers, layer -1 (OneVision shape)", False, tower, pixels


RANDOM_TOWERS = {"clip-l-336": _random_clip, "siglip-so400m-384": _random_siglip}


def random_tower_sources(names: Sequence[str], seed: int = 0) -> list[Source]:
    from .family_grids import _tower_scores

    out = []
    for name in names:
        if name not in RANDOM_TOWERS:
            raise ValueError(f"--random-tower {name!r}: known: {', '.join(RANDOM_TOWERS)}")
        label, has_cls, tower, pixels = RANDOM_TOWERS[name](seed)
        out.append(Source(f"{label}, random weights", has_cls,
                          lambda image, names, t=tower, px=pixels: _tower_scores(t, px(image.convert("RGB")), names),
                          True))
    return out


# ---- measuring -----------------------------------------------------------------------------------------------


class SignalAccumulator:
    """Per-view summaries and the mean cumulative curve of every (source, signal)."""

    def __init__(self, top_fraction: float, overlap_fraction: float) -> None:
        self.top_fraction, self.overlap_fraction = top_fraction, overlap_fraction
        self.rows: list[dict] = []
        self.curves: dict[tuple[str, str], np.ndarray] = {}
        self.counts: dict[tuple[str, str], int] = {}

    def add(self, source: str, image_id: str, scores: dict) -> None:
        """scores: {signal: [V, N]} of one image; every view is one distribution."""
        for name, values in scores.items():
            values = np.asarray(values, dtype=np.float64)
            for view, s in enumerate(values):
                row = {"source": source, "image": image_id, "view": view, "signal": name, "num_patches": s.size,
                       **concentration_summary(s, self.top_fraction)}
                if CLS in scores and name != CLS:
                    ref = np.asarray(scores[CLS][view], dtype=np.float64)
                    row.update(overlap_with_cls=top_overlap(s, ref, self.overlap_fraction),
                               spearman_with_cls=spearman(s, ref))
                self.rows.append(row)
                key = (source, name)
                # on a fixed x = k / N grid, so views of different N (Qwen's dynamic resolution) average
                curve = np.interp(CURVE_X, np.arange(s.size + 1) / s.size, np.concatenate([[0.0], cumulative_share(s)]))
                self.curves[key] = self.curves.get(key, 0) + curve
                self.counts[key] = self.counts.get(key, 0) + 1

    def summary(self) -> list[dict]:
        """One row per (source, signal): the means over views of every number."""
        out = []
        for source, name in self.counts:
            rows = [r for r in self.rows if r["source"] == source and r["signal"] == name]
            mean = {k: float(np.mean([r[k] for r in rows])) for k in SUMMARY_KEYS}
            for k in AGREEMENT_KEYS:
                mean[k] = float(np.mean([r[k] for r in rows])) if k in rows[0] else None
            out.append({"source": source, "signal": name, "num_views": len(rows),
                        "num_patches": _count_range([r["num_patches"] for r in rows]), **mean})
        return out


def _count_range(counts: Sequence[int]) -> int | str:
    """One count, or 'min-max' when views differ (dynamic resolution)."""
    low, high = min(counts), max(counts)
    return low if low == high else f"{low}-{high}"


def list_images(paths: Sequence[str], limit: int = -1) -> list[str]:
    """Image files from files and folders (sorted within a folder), the first `limit` (all when < 0)."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files += sorted(str(f) for f in Path(p).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise FileNotFoundError(f"--images {p}: no such file or folder")
    if not files:
        raise FileNotFoundError(f"--images {list(paths)}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return files if limit < 0 else files[:limit]


def measure(sources: Iterable[Source], images: Sequence[str], signals: Sequence[str], top_fraction: float = 0.1,
            overlap_fraction: float = 0.25) -> SignalAccumulator:
    from llava.mm_utils import load_image

    acc = SignalAccumulator(top_fraction, overlap_fraction)
    loaded = [(Path(f).name, load_image(f)) for f in images]
    for source in sources:
        names = [n for n in signals if n != CLS or source.has_cls]
        for image_id, image in loaded:
            acc.add(source.label, image_id, source.scores(image, names))
    return acc


def build_stats(acc: SignalAccumulator, sources: Sequence[Source], images: Sequence[str]) -> dict:
    return {
        "analysis": "signal_dispersion",
        "sources": [{"label": s.label, "has_cls": s.has_cls, "random_weights": s.random_weights} for s in sources],
        "images": [str(f) for f in images],
        "top_fraction": acc.top_fraction,
        "overlap_fraction": acc.overlap_fraction,
        "summary": acc.summary(),
        "cumulative": [{"source": src, "signal": name, "curve": (acc.curves[(src, name)] / n).tolist()}
                       for (src, name), n in acc.counts.items()],
        "per_view": acc.rows,
    }


# ---- plot ------------------------------------------------------------------------------------------------------


SIGNAL_COLOURS = {CLS: "black", "mean_attn": "tab:blue", "mean_attn_deep": "tab:cyan",
                  "pooled_query_attn": "tab:orange", "feature_norm": "tab:green"}


def plot(stats: dict, out: Path) -> Path:
    """Top: mean cumulative share curves, one panel per source. Bottom: Gini and top-mass share per source and signal."""
    import textwrap

    plt = common.pyplot()
    sources = [s["label"] for s in stats["sources"]]
    n = len(sources)
    fig = plt.figure(figsize=(max(3.3 * n, 8), 6.6), constrained_layout=True)
    grid = fig.add_gridspec(2, 2 * n)
    for i, source in enumerate(sources):
        ax = fig.add_subplot(grid[0, 2 * i:2 * i + 2])
        for c in (c for c in stats["cumulative"] if c["source"] == source):
            curve = c["curve"]  # sampled at k / N = 0 .. 1
            ax.plot(np.linspace(0, 1, len(curve)), curve, color=SIGNAL_COLOURS.get(c["signal"]), lw=1.5,
                    ls="--" if c["signal"] == CLS else "-", label=c["signal"])
        ax.plot([0, 1], [0, 1], color="0.7", ls=":", lw=1)
        ax.set_title(f"[{i + 1}] " + "\n".join(textwrap.wrap(source, 34)), fontsize=8)
        ax.set_xlabel("share of patches (largest first)", fontsize=7)
        ax.set_ylabel("cumulative share of the score", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7, loc="lower right")
    signals = list(dict.fromkeys(r["signal"] for r in stats["summary"]))
    width = 0.8 / len(signals)
    for j, (key, label) in enumerate((("gini", "Gini (0 = uniform)"),
                                      ("top_mass", f"mass of the top {100 * stats['top_fraction']:.0f}% of patches"))):
        ax = fig.add_subplot(grid[1, j * n:(j + 1) * n])
        for m, name in enumerate(signals):
            rows = {r["source"]: r for r in stats["summary"] if r["signal"] == name}
            x = [i + (m - (len(signals) - 1) / 2) * width for i, src in enumerate(sources) if src in rows]
            ax.bar(x, [rows[src][key] for src in sources if src in rows], width, color=SIGNAL_COLOURS.get(name),
                   label=name)
        if key == "top_mass":
            ax.axhline(stats["top_fraction"], color="0.5", ls=":", lw=1, label="uniform")
        ax.set_xticks(range(n), [f"[{i + 1}]" for i in range(n)], fontsize=8)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")
        if j == 0:
            ax.legend(fontsize=7)
    if any(s["random_weights"] for s in stats["sources"]):
        fig.suptitle(RANDOM_NOTE, color="tab:red", fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def write_summary_csv(stats: dict, path: Path) -> None:
    keys = ["source", "signal", "num_views", "num_patches", *SUMMARY_KEYS, *AGREEMENT_KEYS]
    common.write_csv(path, keys, ([r[k] for k in keys] for r in stats["summary"]))


# ---- CLI -------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Concentration of the vision signals without [CLS], per family "
                                                 "(docs/ANALYSIS.md, docs/MODELS.md)")
    parser.add_argument("--model-path", action="append", default=[], help="a checkpoint folder (repeatable)")
    parser.add_argument("--families", default="", help="tiny checkpoints of these registered families "
                                                       "(comma-separated, or 'all'), built on the fly")
    parser.add_argument("--random-tower", default="", help=f"towers at real dimensions with random weights: "
                                                           f"{', '.join(RANDOM_TOWERS)} (comma-separated)")
    parser.add_argument("--images", nargs="+", default=[DEFAULT_IMAGES], help="image files or folders")
    parser.add_argument("--num-images", type=int, default=-1, help="use the first N images (default: all)")
    parser.add_argument("--signals", default=",".join((CLS, *STAND_INS)),
                        help="signals to describe ([CLS] is skipped on towers without one)")
    parser.add_argument("--top-fraction", type=float, default=0.1, help="top_mass: mass of this share of patches")
    parser.add_argument("--overlap-fraction", type=float, default=0.25,
                        help="overlap_with_cls: the top sets of this share of patches")
    parser.add_argument("--output-dir", default="outputs/analysis/signal_dispersion")
    parser.add_argument("--out-png", default=None, help="the plot (default: OUTPUT_DIR/signal_dispersion.png)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="the random towers' initialisation")
    parser.add_argument("--replot", default=None, metavar="STATS.json", help="redraw from a stats file")
    return parser


def main(argv: list[str] | None = None) -> dict:
    """Measure (or --replot) the concentration of each source's signals; returns the stats dict."""
    import tempfile

    from llava.pruning.signals import signal_spec

    from .family_grids import list_grid_families

    parser = build_parser()
    args = parser.parse_args(argv)
    out = Path(args.output_dir)
    png = Path(args.out_png) if args.out_png else out / "signal_dispersion.png"
    if args.replot:
        stats = common.read_stats(args.replot, "signal_dispersion")
        print(f"redrew {plot(stats, png)}")
        return stats
    families = list_grid_families() if args.families == "all" else [f for f in args.families.split(",") if f]
    towers = [t for t in args.random_tower.split(",") if t]
    if not (args.model_path or families or towers):
        parser.error("give --model-path, --families or --random-tower (or --replot)")
    signals = [s.strip() for s in args.signals.split(",") if s.strip()]
    for name in signals:
        spec = signal_spec(name)  # unknown names fail here
        if spec.fn is None or spec.patch_axis != 1 or name not in (CLS, *STAND_INS):
            parser.error(f"--signals {name!r}: not a per-patch tower signal ({', '.join((CLS, *STAND_INS))})")
    if not (0 < args.top_fraction <= 1 and 0 < args.overlap_fraction <= 1):
        parser.error("--top-fraction and --overlap-fraction must be in (0, 1]")
    images = list_images(args.images, args.num_images)
    common.setup_logging()
    with tempfile.TemporaryDirectory() as tmp:
        sources = family_sources(args.model_path, families, Path(tmp), args.device)
        sources += random_tower_sources(towers, args.seed)
        acc = measure(sources, images, signals, args.top_fraction, args.overlap_fraction)
    stats = build_stats(acc, sources, images)
    common.write_json(out / STATS_FILE, stats)
    write_summary_csv(stats, out / SUMMARY_CSV)
    plot(stats, png)
    common.logger.info("wrote %s, %s and %s", out / STATS_FILE, out / SUMMARY_CSV, png)
    return stats


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
