"""Time a K sweep in one run against one separate run per K (each loading the model).

    python -m llava.eval.bench_sweep --budgets 576,288,144,58,29 --repeats 3      # the embedded tiny model
    python -m llava.eval.bench_sweep --model-path liuhaotian/llava-v1.5-7b --question-file Q.jsonl \
        --image-folder IMG --device cuda --batch-size 8

Both sides run `python -m llava.eval.model_vqa_loader` as fresh processes, as a user would: the
separate side once per K (`--visual-token-num K`), the sweep side once (`--visual-token-num
K1,K2,...`, and again with `--joint-sweep`). It also times the same work in this process (model load
+ answering, no interpreter start), records wall and CPU seconds (CPU time is the steadier number on a
shared machine), checks that the sweeps' answers equal the separate runs' answers, and prints a
markdown table (docs/PERFORMANCE_SWEEP.md). Without --model-path it writes the tiny random-weight
checkpoint first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _driver_flags(args, answers: Path, budgets: str) -> list[str]:
    return ["--model-path", args.model_path, "--question-file", args.question_file, "--image-folder",
            args.image_folder, "--answers-file", str(answers), "--conv-mode", args.conv_mode, "--temperature", "0",
            "--max_new_tokens", str(args.max_new_tokens), "--batch-size", str(args.batch_size),
            "--device", args.device, "--visual-token-num", budgets, "--no-resume"]


def _subprocess_run(flags: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one fresh driver process."""
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llava.eval.model_vqa_loader", *flags],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"model_vqa_loader {' '.join(flags)} failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)


def _in_process_run(flags: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of the driver's main() in this process: model load and answering."""
    from llava.eval.model_vqa_loader import main

    start, cpu = time.perf_counter(), time.process_time()
    with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):  # progress bars
        main(flags)
    return time.perf_counter() - start, time.process_time() - cpu


def _texts(path: Path) -> list[tuple]:
    return [(r["question_id"], r["text"]) for r in map(json.loads, path.read_text().splitlines())]


VARIANTS = ("separate", "sweep", "joint sweep")


def measure(args, out: Path, budgets: list[int]) -> dict:
    """Per mode and variant: the median (wall, CPU) seconds over the repeats (separate: summed over K)."""
    sweep = ",".join(map(str, budgets))
    result: dict = {}
    for mode, run in (("subprocess", _subprocess_run), ("in-process", _in_process_run)):
        if mode == "in-process":
            run(_driver_flags(args, out / "warmup.jsonl", str(budgets[0])))  # imports, lazy inits
        samples: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        for _ in range(args.repeats):  # interleaved, so a busy spell of the machine hits every variant
            runs = [run(_driver_flags(args, out / f"one_k{k}.jsonl", str(k))) for k in budgets]
            samples["separate"].append((sum(w for w, _ in runs), sum(c for _, c in runs)))
            samples["sweep"].append(run(_driver_flags(args, out / "sweep.jsonl", sweep)))
            samples["joint sweep"].append(run(_driver_flags(args, out / "joint.jsonl", sweep) + ["--joint-sweep"]))
        result[mode] = {v: (statistics.median(w for w, _ in xs), statistics.median(c for _, c in xs))
                        for v, xs in samples.items()}
    result["answers_equal"] = {
        name: all(_texts(out / f"one_k{k}.jsonl") == _texts(out / f"{name}_k{k}.jsonl") for k in budgets)
        for name in ("sweep", "joint")
    }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", default=None,
                        help="default: the tiny random-weight model, written to --out-dir")
    parser.add_argument("--question-file", default=str(REPO / "playground/data/sample/questions.jsonl"))
    parser.add_argument("--image-folder", default=str(REPO / "assets/samples"))
    parser.add_argument("--budgets", default="576,288,144,58,29")
    parser.add_argument("--conv-mode", default="vicuna_v1")
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="report the median of this many measurements")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per process (OMP_NUM_THREADS); 1 keeps timings steady on a busy machine")
    parser.add_argument("--out-dir", default=None, help="answers and the tiny model (default: a temporary folder)")
    args = parser.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the driver processes inherit it
    import torch

    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out_dir or tmp)
        out.mkdir(parents=True, exist_ok=True)
        if args.model_path is None:
            from llava.model.tiny import LLAVA_DIR, save_tiny_checkpoint

            save_tiny_checkpoint(out / "tiny")
            args.model_path = str(out / "tiny" / LLAVA_DIR)
        budgets = [int(k) for k in args.budgets.split(",")]
        result = measure(args, out, budgets)

    n = sum(1 for line in Path(args.question_file).read_text().splitlines() if line.strip())
    print(f"{n} questions, K = {args.budgets}, batch {args.batch_size}, {args.max_new_tokens} new tokens, "
          f"{args.device}, {args.threads} thread(s), median of {args.repeats}; "
          f"wall s / CPU s, ratio = sweep / {len(budgets)} separate runs\n")
    print("| mode | separate runs | sweep | ratio | joint sweep | ratio |")
    print("|---|---|---|---|---|---|")
    for mode in ("subprocess", "in-process"):
        sep, swp, jnt = (result[mode][v] for v in VARIANTS)
        cells = [f"{w:.2f} / {c:.2f}" for w, c in (sep, swp, jnt)]
        print(f"| {mode} | {cells[0]} | {cells[1]} | {swp[0] / sep[0]:.2f}x / {swp[1] / sep[1]:.2f}x "
              f"| {cells[2]} | {jnt[0] / sep[0]:.2f}x / {jnt[1] / sep[1]:.2f}x |")
    print(f"\nanswers equal the separate runs' answers: {result['answers_equal']}")
    return result


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
