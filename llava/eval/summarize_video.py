"""FasterVLM's video table from the video-QA score records (`python -m llava.eval.summarize RESULTS --video`).

Records: what `eval_video_qa --save-json` writes (the scripts put them at RESULTS/<bench>/k<K>.json and
full.json): benchmark column, `k` (tokens per frame; null = unpruned), `headline` (accuracy %),
`metrics.score`, plus `method` and `visual_tokens` (mean video tokens the LLM saw, 8 x K) from the
answers. Rows are runs (method, K): the baseline first, then by K descending. The baseline is the
unpruned run (k null, 8 x 257 tokens) when there is one. Otherwise it is a run keeping all 256 patches
of each frame (K >= 256: FasterVLM's "2048 tokens" row). Per benchmark the cells are accuracy and
score. As in FasterVLM's table, "Avg" is the mean over the benchmarks of each run's accuracy (and
score) as % of the baseline's. "Reduction" is 1 - tokens / baseline tokens.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from llava.eval import catalogue

Run = tuple[str, int | None]  # (method, K per frame); ("unpruned", None) for the unpruned model
FULL_PATCHES = 256  # patches per frame of Video-LLaVA's 224 px / 14 px towers


@dataclass
class VideoTable:
    runs: list[Run]
    columns: list[str]
    cells: dict[tuple[Run, str], tuple[float, float]]  # (accuracy %, score)
    tokens: dict[Run, float | None]
    baseline: Run | None = None
    relative: dict[tuple[Run, str], tuple[float | None, float | None]] = field(default_factory=dict)
    avg: dict[Run, tuple[float | None, float | None]] = field(default_factory=dict)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _number(value, path: Path, name: str) -> float:
    """A finite real number of a record, or a ValueError naming the record and the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{path}: {name} is {value!r}, not a number; rewrite the record with llava.eval.eval_video_qa")
    return float(value)


def _checked(path: Path, rec: dict) -> tuple[int | None, float, float, float | None]:
    """(K, headline accuracy, score, visual tokens) of a video-QA record, each checked."""
    k = rec["k"]
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ValueError(f"{path}: k is {k!r}; a video-QA record holds K per frame (an integer >= 1) or null "
                         "(unpruned); rewrite it with llava.eval.eval_video_qa --k")
    metrics = rec.get("metrics")
    if not isinstance(metrics, dict) or metrics.get("score") is None:
        raise ValueError(f"{path}: a video-QA record without metrics.score; write it with llava.eval.eval_video_qa")
    tokens = rec.get("visual_tokens")
    return (k, _number(rec["headline"], path, "headline"), _number(metrics["score"], path, "metrics.score"),
            None if tokens is None else _number(tokens, path, "visual_tokens"))


def build_video_table(records: Sequence[tuple[Path, dict]]) -> VideoTable:
    """Arrange video-QA records into runs x benchmarks; a repeated (method, K, benchmark) raises ValueError
    (unpruned runs recorded under several methods are the same model: the first, by path, counts)."""
    cells: dict[tuple[Run, str], tuple[float, float]] = {}
    origin: dict[tuple[Run, str], Path] = {}
    tokens: dict[Run, list[float]] = {}
    for path, rec in records:
        column = catalogue.find(rec["benchmark"]).columns[0]
        k, headline, score, visual_tokens = _checked(path, rec)
        run: Run = ("unpruned", None) if k is None else (str(rec.get("method") or "?"), int(k))
        if (run, column) in cells:
            if k is None:
                continue
            raise ValueError(f"{column} of {run[0]} at K={k} is in both {origin[(run, column)]} and {path}; "
                             "keep one of them")
        cells[(run, column)], origin[(run, column)] = (headline, score), path
        if visual_tokens is not None:
            tokens.setdefault(run, []).append(visual_tokens)
    runs = {run for run, _ in cells}
    baseline: Run | None = ("unpruned", None) if ("unpruned", None) in runs else None
    if baseline is None:
        full = sorted((r for r in runs if r[1] is not None and r[1] >= FULL_PATCHES), key=lambda r: (r[0] != "fastervlm", r))
        baseline = full[0] if full else None
    others = sorted((r for r in runs if r != baseline), key=lambda r: (-(r[1] or 0), r[0]))
    present = {c for _, c in cells}
    columns = [c for c in catalogue.video_columns() if c in present]
    table = VideoTable(([baseline] if baseline else []) + others, columns, cells,
                       {r: _mean(tokens.get(r, [])) for r in runs}, baseline)
    for (run, column), (acc, score) in cells.items():
        base = cells.get((baseline, column)) if baseline else None
        if base:
            table.relative[(run, column)] = (100 * acc / base[0] if base[0] else None,
                                             100 * score / base[1] if base[1] else None)
    for run in table.runs:
        rel = [table.relative[(run, c)] for c in columns if (run, c) in table.relative]
        table.avg[run] = (_mean([a for a, _ in rel if a is not None]), _mean([s for _, s in rel if s is not None]))
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def _reduction(table: VideoTable, run: Run) -> str:
    base = table.tokens.get(table.baseline) if table.baseline else None
    have = table.tokens.get(run)
    return "-" if not base or have is None else f"{100 * (1 - have / base):.0f}%"


def _label(table: VideoTable, run: Run) -> str:
    method = "Video-LLaVA (unpruned)" if run == ("unpruned", None) else run[0]
    return method + (" (baseline)" if run == table.baseline else "")


def video_markdown(table: VideoTable, published: Sequence[str] = ()) -> str:
    """FasterVLM's layout: method, reduction, # tokens, accuracy and score per benchmark, and the averages."""
    head = ["Method", "K / frame", "Reduction", "# Token",
            *(f"{c} {m}" for c in table.columns for m in ("Acc.", "Score")), "Avg Acc.", "Avg Score"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in table.runs:
        cells = []
        for c in table.columns:
            acc, score = table.cells.get((run, c), (None, None))
            cells += ["-" if acc is None else f"{acc:.2f}", "-" if score is None else f"{score:.2f}"]
        tokens = table.tokens.get(run)
        avg_acc, avg_score = table.avg.get(run, (None, None))
        lines.append("| " + " | ".join([_label(table, run), "full" if run[1] is None else str(run[1]),
                                        _reduction(table, run), "-" if tokens is None else f"{tokens:.0f}",
                                        *cells, _pct(avg_acc), _pct(avg_score)]) + " |")
    for name in published:
        lines += published_rows(table, name)
    return "\n".join(lines)


def published_rows(table: VideoTable, name: str) -> list[str]:
    """Markdown rows of published numbers under the table's columns: 'Video-LLaVA-7B' (the paper, full
    test sets) or 'FasterVLM' (its video table, first 1K questions; llava.eval.catalogue.video_qa)."""
    from llava.eval.catalogue import video_qa

    def row(label: str, k: str, tokens: str, values: dict, avg: tuple | None) -> str:
        cells = []
        for c in table.columns:
            acc, score = values.get(c, (None, None))
            cells += ["-" if acc is None else f"{acc:.2f}", "-" if score is None else f"{score:.2f}"]
        avg_cells = ["-", "-"] if avg is None else [f"{avg[0]:.2f}%", f"{avg[1]:.2f}%"]
        return "| " + " | ".join([label, k, "-", tokens, *cells, *avg_cells]) + " |"

    if name == "Video-LLaVA-7B":
        values = {r.columns[0]: r.published[name] for r in catalogue.VIDEO_RECORDS}
        return [row("Video-LLaVA-7B (published)", "full", "2056", values, None)]
    if name == "FasterVLM":
        return [row(f"{method} (FasterVLM paper)", str(tokens // 8), str(tokens), dict(values),
                    video_qa.FASTERVLM_VIDEO_AVERAGES[(method, tokens)])
                for method, tokens, values in video_qa.FASTERVLM_VIDEO_TABLE]
    raise ValueError(f"--published {name}: video tables know 'Video-LLaVA-7B' and 'FasterVLM'")


def write_video_csv(table: VideoTable, path: Path) -> None:
    """Wide CSV: method, K, tokens, then accuracy, score and their % of the baseline per benchmark, then Avg."""
    fmt = lambda v: "" if v is None else f"{v:.4f}"  # noqa: E731
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "K", "tokens", *(f"{c} {m}" for c in table.columns
                                                   for m in ("acc", "score", "acc %", "score %")),
                         "Avg acc %", "Avg score %"])
        for run in table.runs:
            row = [run[0], "full" if run[1] is None else run[1], fmt(table.tokens.get(run))]
            for c in table.columns:
                acc, score = table.cells.get((run, c), (None, None))
                rel = table.relative.get((run, c), (None, None))
                row += [fmt(acc), fmt(score), fmt(rel[0]), fmt(rel[1])]
            writer.writerow(row + [fmt(v) for v in table.avg.get(run, (None, None))])


def main_video(records: Sequence[tuple[Path, dict]], out: str | None, published: Sequence[str]) -> VideoTable:
    """Print the video table (and write OUT.md / OUT.csv)."""
    table = build_video_table(records)
    if table.baseline is None:
        print("warning: no unpruned run (K=full) and no run keeping all 256 patches; no relative scores")
    elif table.baseline != ("unpruned", None):
        print(f"note: no unpruned run; baseline is {table.baseline[0]} at K={table.baseline[1]} (all patches kept)")
    markdown = video_markdown(table, published)
    print(markdown)
    if out:
        prefix = Path(out)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{prefix}.md").write_text(markdown + "\n", encoding="utf-8")
        write_video_csv(table, Path(f"{prefix}.csv"))
        print(f"wrote {prefix}.md, {prefix}.csv")
    return table
