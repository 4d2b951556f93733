"""Build the paper table (benchmarks x kept visual tokens K) from the scorers' `--save-json` records.

Layout: run each scorer with `--save-json RESULTS_DIR/<bench>/k<K>/score.json --k K`; any `*.json`
under RESULTS_DIR holding `{"benchmark", "k", "metrics", "headline"}` is read (other JSON is ignored,
and K comes from the record; `k: null` means unpruned, i.e. the baseline K). Rows: the baseline K,
then the other K descending. Columns: the benchmarks in paper order (unknown names after). Each
cell is the headline score and its % of the same benchmark's baseline score; Avg is the mean of
those percentages over the benchmarks present at that K that have a baseline.

  python -m llava.eval.summarize RESULTS_DIR [--baseline-k 576] [--out PREFIX] [--published LLaVA-1.5-7B]
writes Markdown to stdout and PREFIX.md, PREFIX.csv and PREFIX.png (relative score vs K); `--published`
adds a row of that model's published K=576 numbers (the catalogue's baselines) to the Markdown.

`--align layer-averaged` lines methods up at equal layer-averaged visual tokens, as papers compare
in-LLM methods (FastV, PyramidDrop: all tokens enter the LLM, fewer run in its later layers) with
pre-LLM ones (K tokens in every layer). Rows are (method, K) runs, read from the records' `method`
and `layer_averaged_visual_tokens` (written by the scorers from the answers' metadata; a record
without them counts as its K), sorted by layer-averaged tokens, largest first; runs within
`--group-tolerance` (relative) of a group's first row share its group. The unpruned row (layer-averaged
tokens = the baseline K) is the baseline of every method; the plot shows Avg vs layer-averaged tokens.

`--video` builds FasterVLM's video table instead, from the video-QA records (MSVD-QA, MSRVTT-QA, TGIF-QA,
ActivityNet-QA; `llava.eval.summarize_video`): accuracy and score per benchmark and (method, K per frame),
averaged as % of the unpruned run; `--published Video-LLaVA-7B` / `--published FasterVLM` add the
published rows. Without `--video`, video-QA records are left out of the image table.
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from llava.eval import catalogue

PAPER_ORDER = catalogue.paper_columns()  # VQAv2, GQA, VizWiz, SQA-IMG, ..., LLaVA-Bench (llava.eval.catalogue)
RECORD_KEYS = frozenset({"benchmark", "k", "metrics", "headline"})
MAX_RECORD_BYTES = 1 << 20


def canonical_name(name: str) -> str:
    """The paper column for a benchmark name, alias or column (case-insensitive; the catalogue's spellings)."""
    record = catalogue.find(name)
    if record is None:
        return name.strip()
    by_lower = {c.lower(): c for c in record.columns}
    return by_lower.get(name.strip().lower(), record.columns[0])


def find_records(root: str | Path) -> list[tuple[Path, dict]]:
    """Every score record (small JSON object with the record keys) under `root`, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results folder {root} not found")
    found = []
    for path in sorted(root.rglob("*.json")):
        if path.stat().st_size > MAX_RECORD_BYTES:
            continue
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict) and RECORD_KEYS <= obj.keys():
            found.append((path, obj))
    return found


@dataclass
class PaperTable:
    """Headline scores by (K, benchmark) and the derived relative scores."""

    baseline_k: int
    scores: dict[tuple[int, str], float]
    ks: list[int] = field(default_factory=list)
    benchmarks: list[str] = field(default_factory=list)
    relative: dict[tuple[int, str], float] = field(default_factory=dict)
    avg: dict[int, float | None] = field(default_factory=dict)
    no_baseline: list[str] = field(default_factory=list)


def build_table(records: Sequence[tuple[Path, dict]], baseline_k: int = 576) -> PaperTable:
    """Arrange records into rows (K) and columns (benchmarks); a repeated (benchmark, K) raises ValueError."""
    scores: dict[tuple[int, str], float] = {}
    origin: dict[tuple[int, str], Path] = {}
    for path, rec in records:
        k = baseline_k if rec["k"] is None else int(rec["k"])
        key = (k, canonical_name(rec["benchmark"]))
        if key in scores:
            raise ValueError(f"{key[1]} at K={k} is in both {origin[key]} and {path}; keep one of them "
                             "(records of several methods: --align layer-averaged puts them side by side)")
        scores[key], origin[key] = float(rec["headline"]), path
    table = PaperTable(baseline_k, scores)
    present = {b for _, b in scores}
    table.benchmarks = [b for b in PAPER_ORDER if b in present] + sorted(present - set(PAPER_ORDER))
    others = sorted({k for k, _ in scores if k != baseline_k}, reverse=True)
    table.ks = ([baseline_k] if any(k == baseline_k for k, _ in scores) else []) + others
    base = {b: scores[(baseline_k, b)] for b in table.benchmarks if (baseline_k, b) in scores}
    table.no_baseline = [b for b in table.benchmarks if not base.get(b)]
    for (k, b), v in scores.items():
        if base.get(b):
            table.relative[(k, b)] = 100 * v / base[b]
    for k in table.ks:
        rel = [table.relative[(k, b)] for b in table.benchmarks if (k, b) in table.relative]
        table.avg[k] = sum(rel) / len(rel) if rel else None
    return table


def _cell(table: PaperTable, k: int, bench: str) -> str:
    if (k, bench) not in table.scores:
        return "-"
    rel = table.relative.get((k, bench))
    return f"{table.scores[(k, bench)]:.2f}" + ("" if rel is None else f" ({rel:.1f}%)")


def published_row(table: PaperTable, model: str) -> list[str]:
    """Markdown cells of `model`'s published K=576 numbers (the catalogue's baselines) under the table's columns."""
    cells = [f"{model} (published)"]
    for bench in table.benchmarks:
        record = catalogue.find(bench)
        value = record.baseline(model, bench) if record else None
        cells.append("-" if value is None else f"{value:.2f}")
    return cells + ["-"]


def to_markdown(table: PaperTable, published: Sequence[str] = ()) -> str:
    """The table as GitHub Markdown, with a row of published numbers per model in `published` at the end."""
    head = ["K", *table.benchmarks, "Avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for k in table.ks:
        avg = table.avg[k]
        label = f"{k} (baseline)" if k == table.baseline_k else str(k)
        cells = [label, *(_cell(table, k, b) for b in table.benchmarks), "-" if avg is None else f"{avg:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    for model in published:
        lines.append("| " + " | ".join(published_row(table, model)) + " |")
    return "\n".join(lines)


def write_csv(table: PaperTable, path: Path) -> None:
    """Wide CSV: K, then `<bench>` and `<bench> %` per benchmark, then `Avg %` (empty where absent)."""
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["K", *(c for b in table.benchmarks for c in (b, f"{b} %")), "Avg %"])
        for k in table.ks:
            row = [k]
            for b in table.benchmarks:
                row += [fmt(table.scores.get((k, b))), fmt(table.relative.get((k, b)))]
            writer.writerow(row + [fmt(table.avg[k])])


def plot(table: PaperTable, path: Path) -> None:
    """PNG of % of baseline vs K, one line per benchmark with a baseline, plus the average."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ks = sorted(table.ks)
    for b in table.benchmarks:
        pts = [(k, table.relative[(k, b)]) for k in ks if (k, b) in table.relative]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=b)
    avg = [(k, table.avg[k]) for k in ks if table.avg[k] is not None]
    if avg:
        ax.plot([p[0] for p in avg], [p[1] for p in avg], "k--", marker="s", linewidth=2, label="Avg")
    if ks and min(ks) > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("visual tokens kept (K)")
    ax.set_ylabel(f"score, % of baseline (K={table.baseline_k})")
    ax.set_title("Relative performance vs. number of visual tokens")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


# ---- methods lined up at equal layer-averaged visual tokens ---------------------------------------
@dataclass
class AlignedTable:
    """Headline scores by run (method, K) and benchmark, the runs ordered by layer-averaged tokens."""

    baseline_k: int
    runs: list[tuple[str, int]]  # (method, K), the baseline run first, then by layer-averaged tokens
    layer_avg: dict[tuple[str, int], float]
    groups: dict[tuple[str, int], float]  # each run's group: the layer-averaged tokens of the group's first run
    scores: dict[tuple[tuple[str, int], str], float]
    benchmarks: list[str]
    relative: dict[tuple[tuple[str, int], str], float] = field(default_factory=dict)
    avg: dict[tuple[str, int], float | None] = field(default_factory=dict)
    baseline: tuple[str, int] | None = None


def build_aligned(records: Sequence[tuple[Path, dict]], baseline_k: int = 576,
                  tolerance: float = 0.05) -> AlignedTable:
    """Arrange records into runs (method, K) ordered by layer-averaged tokens; a repeated
    (method, K, benchmark) raises ValueError. Unpruned runs (layer-averaged = baseline K) of any
    method form one baseline row; where several give a benchmark's score, the first (by path) counts."""
    scores: dict[tuple[tuple[str, int], str], float] = {}
    origin: dict[tuple[tuple[str, int], str], Path] = {}
    tokens: dict[tuple[str, int], list[float]] = {}
    for path, rec in records:
        k = baseline_k if rec["k"] is None else int(rec["k"])
        avg = rec.get("layer_averaged_visual_tokens")
        avg = float(k if avg is None else avg)
        method = "unpruned" if avg >= baseline_k else str(rec.get("method") or "?")
        run = (method, baseline_k if method == "unpruned" else k)
        key = (run, canonical_name(rec["benchmark"]))
        if key in scores:
            if method == "unpruned":
                continue  # another method's unpruned run: the same model, scored once
            raise ValueError(f"{key[1]} of {method} at K={k} is in both {origin[key]} and {path}; keep one of them")
        scores[key], origin[key] = float(rec["headline"]), path
        tokens.setdefault(run, []).append(avg)
    layer_avg = {run: sum(v) / len(v) for run, v in tokens.items()}
    baseline = ("unpruned", baseline_k) if ("unpruned", baseline_k) in layer_avg else None
    others = sorted((r for r in layer_avg if r != baseline), key=lambda r: (-layer_avg[r], r[0], -r[1]))
    groups: dict[tuple[str, int], float] = {}
    head = None
    for run in others:
        if head is None or layer_avg[run] < head * (1 - tolerance):
            head = layer_avg[run]
        groups[run] = head
    if baseline:
        groups[baseline] = float(baseline_k)
    present = {b for _, b in scores}
    benchmarks = [b for b in PAPER_ORDER if b in present] + sorted(present - set(PAPER_ORDER))
    table = AlignedTable(baseline_k, ([baseline] if baseline else []) + others, layer_avg, groups, scores,
                         benchmarks, baseline=baseline)
    base = {b: scores[(baseline, b)] for b in benchmarks if baseline and (baseline, b) in scores}
    for (run, b), v in scores.items():
        if base.get(b):
            table.relative[(run, b)] = 100 * v / base[b]
    for run in table.runs:
        rel = [table.relative[(run, b)] for b in benchmarks if (run, b) in table.relative]
        table.avg[run] = sum(rel) / len(rel) if rel else None
    return table


def aligned_markdown(table: AlignedTable) -> str:
    """One row per run: its group, method, K, layer-averaged tokens, the benchmarks and Avg."""
    head = ["≈ layer-avg tokens", "method", "K", "layer-avg tokens", *table.benchmarks, "Avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in table.runs:
        cells = []
        for b in table.benchmarks:
            if (run, b) not in table.scores:
                cells.append("-")
                continue
            rel = table.relative.get((run, b))
            cells.append(f"{table.scores[(run, b)]:.2f}" + ("" if rel is None else f" ({rel:.1f}%)"))
        avg = table.avg[run]
        method = "unpruned (baseline)" if run == table.baseline else run[0]
        lines.append("| " + " | ".join([f"{table.groups[run]:.0f}", method, str(run[1]), f"{table.layer_avg[run]:.1f}",
                                         *cells, "-" if avg is None else f"{avg:.1f}%"]) + " |")
    return "\n".join(lines)


def write_aligned_csv(table: AlignedTable, path: Path) -> None:
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["group", "method", "K", "layer-averaged tokens",
                         *(c for b in table.benchmarks for c in (b, f"{b} %")), "Avg %"])
        for run in table.runs:
            row = [fmt(table.groups[run]), run[0], run[1], fmt(table.layer_avg[run])]
            for b in table.benchmarks:
                row += [fmt(table.scores.get((run, b))), fmt(table.relative.get((run, b)))]
            writer.writerow(row + [fmt(table.avg[run])])


def plot_aligned(table: AlignedTable, path: Path) -> None:
    """PNG of Avg (% of baseline) vs layer-averaged visual tokens, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    methods = list(dict.fromkeys(r[0] for r in table.runs if r != table.baseline))
    for method in methods:
        pts = sorted((table.layer_avg[r], table.avg[r]) for r in table.runs
                     if r[0] == method and table.avg[r] is not None)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    if table.baseline and table.avg.get(table.baseline) is not None:
        ax.axhline(table.avg[table.baseline], color="k", linestyle="--", linewidth=1, label="unpruned")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("layer-averaged visual tokens (FLOPs-equivalent)")
    ax.set_ylabel(f"Avg score, % of the unpruned run (K={table.baseline_k})")
    ax.set_title("Methods at equal layer-averaged visual tokens")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: Sequence[str] | None = None):
    from llava.cli_errors import UserError, add_debug_arg
    from llava.cli_help import HelpFormatter

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("results_dir", help="folder searched (recursively) for score records")
    parser.add_argument("--baseline-k", type=int, default=576, help="K of the unpruned baseline row")
    parser.add_argument("--out", default=None, help="write PREFIX.md, PREFIX.csv and PREFIX.png")
    parser.add_argument("--published", action="append", default=[], metavar="MODEL",
                        help="add MODEL's published K=576 row from the catalogue (LLaVA-1.5-7B or LLaVA-1.5-13B); "
                             "repeatable")
    parser.add_argument("--align", choices=("k", "layer-averaged"), default="k",
                        help="rows by K (one method), or by layer-averaged visual tokens: methods side by side")
    parser.add_argument("--group-tolerance", type=float, default=0.05,
                        help="with --align layer-averaged: runs within this relative distance share a group")
    parser.add_argument("--video", action="store_true",
                        help="the video-QA table (FasterVLM's video table) from the video-QA records")
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    records = find_records(args.results_dir)
    if not records:
        raise UserError(f"no score records (JSON with {sorted(RECORD_KEYS)}) under {args.results_dir}; "
                        "run the scorers with --save-json first")
    video = [(p, r) for p, r in records if catalogue.is_video(str(r["benchmark"]))]
    if args.video:
        from llava.eval.summarize_video import main_video

        if not video:
            raise UserError(f"no video-QA score records under {args.results_dir}; run scripts/video/eval/*.sh first")
        return main_video(video, args.out, args.published)
    records = [(p, r) for p, r in records if not catalogue.is_video(str(r["benchmark"]))]
    if not records:
        raise UserError(f"only video-QA score records under {args.results_dir}; add --video for their table")
    if args.align == "layer-averaged":
        if args.published:
            raise SystemExit("--published adds rows to the K table; leave it out with --align layer-averaged")
        return _main_aligned(args, records)
    table = build_table(records, args.baseline_k)
    for b in table.no_baseline:
        print(f"warning: no baseline (K={args.baseline_k}) score for {b}; it is left out of Avg")
    models = sorted({key.split("/")[0] for r in catalogue.RECORDS for key in r.baselines})
    unknown = [m for m in args.published if m not in models]
    if unknown:
        raise SystemExit(f"--published {unknown[0]}: no published numbers in llava.eval.catalogue; known: {models}")
    markdown = to_markdown(table, args.published)
    print(markdown)
    if args.out:
        prefix = Path(args.out)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{prefix}.md").write_text(markdown + "\n", encoding="utf-8")
        write_csv(table, Path(f"{prefix}.csv"))
        plot(table, Path(f"{prefix}.png"))
        print(f"wrote {prefix}.md, {prefix}.csv, {prefix}.png")
    return table


def _main_aligned(args, records) -> AlignedTable:
    table = build_aligned(records, args.baseline_k, args.group_tolerance)
    if table.baseline is None:
        print(f"warning: no unpruned run (layer-averaged tokens = {args.baseline_k}); no relative scores")
    markdown = aligned_markdown(table)
    print(markdown)
    if args.out:
        prefix = Path(args.out)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{prefix}.md").write_text(markdown + "\n", encoding="utf-8")
        write_aligned_csv(table, Path(f"{prefix}.csv"))
        plot_aligned(table, Path(f"{prefix}.png"))
        print(f"wrote {prefix}.md, {prefix}.csv, {prefix}.png")
    return table


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
