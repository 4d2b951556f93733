"""LLaVA-Bench: relative scores of GPT-4 review files, overall ("all") and per category.

Each review line has `tuple = [gpt4_score, model_score]` and a `category` such as "llava_bench_conv".
Per group: column means rounded to 3 d.p., relative = round(mean_model / mean_gpt4 * 100, 1).
Reviews whose judge output could not be parsed (a negative score, e.g. [-1, -1]) are left out and counted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .io_utils import PathLike, read_jsonl
from .score_json import add_save_args, save_from_args

CATEGORY_PREFIX = "llava_bench_"
ALL = "all"


def category_name(review: dict) -> str | None:
    """The review's category without the "llava_bench_" prefix, or None when it has none."""
    cat = review.get("category")
    return cat[len(CATEGORY_PREFIX):] if cat and cat.startswith(CATEGORY_PREFIX) else cat


def summarize_reviews(reviews: Sequence[dict], source: PathLike = "reviews") -> dict:
    """`{groups: {name: {gpt4, model, relative, count}}, failed}` for "all" and each category."""
    groups: dict[str, list[tuple[float, float]]] = {}
    failed = 0
    for n, review in enumerate(reviews, start=1):
        if "tuple" not in review:
            raise ValueError(f"{source}: review {n} has no 'tuple' field; is this a GPT review file?")
        gpt4, model = (float(x) for x in review["tuple"])
        if gpt4 < 0 or model < 0:
            failed += 1
            continue
        for name in (ALL, category_name(review)):
            if name:
                groups.setdefault(name, []).append((gpt4, model))
    out = {}
    for name, pairs in sorted(groups.items()):
        gpt4 = round(sum(p[0] for p in pairs) / len(pairs), 3)
        model = round(sum(p[1] for p in pairs) / len(pairs), 3)
        out[name] = {"gpt4": gpt4, "model": model, "relative": round(model / gpt4 * 100, 1) if gpt4 else 0.0,
                     "count": len(pairs)}
    if ALL not in out:
        raise ValueError(f"{source}: no usable reviews")
    return {"groups": out, "failed": failed}


def review_files(files: Sequence[str], directory: str | None) -> list[Path]:
    """The review files named, plus every *.jsonl in `directory`."""
    paths = [Path(f) for f in files]
    if directory:
        paths += sorted(Path(directory).glob("*.jsonl"))
    if not paths:
        raise ValueError("no review files: pass -f FILE... or -d DIR")
    return paths


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-f", "--files", nargs="*", default=[], help="review jsonl files")
    parser.add_argument("-d", "--dir", default=None, help="folder of review jsonl files")
    add_save_args(parser, "LLaVA-Bench")
    args = parser.parse_args(argv)
    results = {}
    for path in review_files(args.files, args.dir):
        res = summarize_reviews(read_jsonl(path), path)
        results[str(path)] = res
        print(path.stem + (f"  ({res['failed']} unparsed reviews left out)" if res["failed"] else ""))
        for name, g in res["groups"].items():
            print(f"  {name:<8} {g['relative']:5.1f}  (GPT-4 {g['gpt4'] * 10:.1f}, model {g['model'] * 10:.1f}, n={g['count']})")
    alls = [r["groups"][ALL]["relative"] for r in results.values()]
    mean = sum(alls) / len(alls)
    if len(alls) > 1:
        print(f"mean relative score over {len(alls)} review files: {mean:.1f}")
    metrics = {"relative": mean, "runs": alls}
    save_from_args(args, metrics, mean)
    return results


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
