"""Questions/s of the evaluation runner, plain path against shared work, side by side in one run.

Question files shaped like the benchmarks (questions per image: GQA 32, POPE 18, MME 2, and 1 as the
no-sharing control; short answers) go through `llava.eval.runner.run_vqa` twice per K: the plain path
(every question runs the tower on its image and prefills its whole prompt, at each batch size
given; the best counts) and the shared path (one vision pass and one prefix prefill per image). Reports questions/s, the speedup, the share
of answers equal to the plain path's, and the process's peak RSS. Random weights, no download:

    python -m llava.bench.sharing --arch llava-v1.5-7b --llm-layers 2 --dtype bfloat16 --visual-token-num 576,64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from llava.eval.runner import GenerationArgs, VQAItem, run_vqa
from llava.pruning.config import PruningConfig

from .measure import _read_status_kb, rss_bytes

SHAPES = {"gqa": 32, "pope": 18, "mme": 2, "single": 1}  # questions per image
_QUESTIONS = ["Is the sky blue?", "What color is the car?", "Is there a dog in the image?", "How many people?",
              "Which side is the tree on?", "What is the man holding?", "Is it sunny?", "What is on the table?"]
SUFFIX = "\nAnswer the question using a single word or phrase."


def shaped_items(shape: str, images: int) -> list[VQAItem]:
    """`images` x SHAPES[shape] questions, written image after image (as the benchmarks' files are)."""
    per = SHAPES[shape]
    return [VQAItem(f"{shape}-{i}-{q}", f"{_QUESTIONS[(i + q) % len(_QUESTIONS)]} ({q}){SUFFIX}", [f"im{i}.png"])
            for i in range(images) for q in range(per)]


def _time_run(model, tok, proc, items, folder: Path, name: str, *, share: bool, batch_size: int,
              new_tokens: int, repeats: int = 1) -> tuple[float, dict]:
    """The fastest of `repeats` runs (seconds) and its answers {question_id: text}."""
    path = folder / f"{name}.jsonl"
    gen = GenerationArgs(temperature=0, max_new_tokens=new_tokens)
    seconds = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run_vqa(model, tok, proc, items, str(path), "vicuna_v1", gen, "bench", image_folder=str(folder),
                batch_size=batch_size, resume=False, share_prefix=share, vision_cache_size=64 if share else 0)
        seconds = min(seconds, time.perf_counter() - start)
    answers = {r["question_id"]: r["text"] for r in map(json.loads, path.read_text().splitlines())}
    return seconds, answers


def run(model, tok, proc, *, shapes: list[str], images: int, ks: list[int | None], plain_batches: list[int],
        shared_batch: int, new_tokens: int, method: str = "fastervlm", repeats: int = 1) -> list[dict]:
    """One row per (shape, K): plain questions/s at its best batch size, shared questions/s, speedup, agreement."""
    from .models import sample_images

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for i, image in enumerate(sample_images(images)):
            image.save(folder / f"im{i}.png")
        for shape in shapes:
            items = shaped_items(shape, images)
            for k in ks:
                with model.pruning_config(PruningConfig(method=method, visual_token_num=k)):
                    plain = {b: _time_run(model, tok, proc, items, folder, f"plain{b}", share=False, batch_size=b,
                                          new_tokens=new_tokens, repeats=repeats) for b in plain_batches}
                    shared_s, shared = _time_run(model, tok, proc, items, folder, "shared", share=True,
                                                 batch_size=shared_batch, new_tokens=new_tokens, repeats=repeats)
                best = min(plain, key=lambda b: plain[b][0])
                reference = plain[best][1]
                agree = sum(shared[q] == reference[q] for q in reference) / len(reference)
                rows.append(dict(shape=shape, questions_per_image=SHAPES[shape], questions=len(items), k=k,
                                 plain_batch=best, plain_qps=len(items) / plain[best][0],
                                 shared_batch=shared_batch, shared_qps=len(items) / shared_s,
                                 speedup=plain[best][0] / shared_s, agreement=agree))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| shape | q/image | K | plain q/s (batch) | shared q/s (batch) | speedup | answers equal |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['questions_per_image']} | {r['k'] or 'all'} | {r['plain_qps']:.2f} "
                     f"({r['plain_batch']}) | {r['shared_qps']:.2f} ({r['shared_batch']}) | {r['speedup']:.2f}x | "
                     f"{r['agreement']:.0%} |")
    return "\n".join(lines)


def _ks(text: str) -> list[int | None]:
    return [None if t in ("all", "576") else int(t) for t in text.split(",")]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava.bench.sharing", description=__doc__)
    p.add_argument("--arch", default="tiny", help="LLaVA-1.5 shape with random weights (tiny, llava-v1.5-7b, ...)")
    p.add_argument("--llm-layers", type=int, default=None, help="run only the first N LLM layers")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--shapes", default="gqa,pope,mme,single", help=f"of {', '.join(SHAPES)}")
    p.add_argument("--images", type=int, default=2, help="distinct images per shape")
    p.add_argument("--visual-token-num", type=_ks, default=[None, 64], help="K values; 576 or 'all' = no pruning")
    p.add_argument("--plain-batch-sizes", default="1,8", help="batch sizes tried for the plain path (best counts)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size of the shared path")
    p.add_argument("--max-new-tokens", type=int, default=2, help="answer length (short, as GQA/POPE/MME)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (the fastest counts)")
    p.add_argument("--out", default=None, help="write sharing.json and sharing.md into this folder")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown --shapes {unknown}; choose from {', '.join(SHAPES)}")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    from .models import build_random_model, random_image_processor, tiny_tokenizer

    tok = tiny_tokenizer()
    if args.arch == "tiny":
        from llava.model.tiny import build_tiny_model

        model = build_tiny_model(len(tok)).to(dtype=dtype).eval()
    else:
        model = build_random_model(args.arch, args.llm_layers, dtype, "cpu", vocab_size=len(tok))
    rss0 = rss_bytes()
    with torch.inference_mode():
        rows = run(model, tok, random_image_processor(), shapes=shapes, images=args.images,
                   ks=args.visual_token_num, plain_batches=[int(b) for b in args.plain_batch_sizes.split(",")],
                   shared_batch=args.batch_size, new_tokens=args.max_new_tokens,
                   repeats=args.repeats)
    result = dict(arch=args.arch, llm_layers=args.llm_layers, dtype=args.dtype, threads=torch.get_num_threads(),
                  rows=rows, rss_after_load_mb=rss0 / 2**20,
                  peak_rss_mb=(_read_status_kb("VmHWM") or rss_bytes()) / 2**20)
    table = markdown(rows)
    print(table)
    print(f"peak RSS {result['peak_rss_mb']:.0f} MiB (after loading {result['rss_after_load_mb']:.0f} MiB)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sharing.json").write_text(json.dumps(result, indent=1))
        (out / "sharing.md").write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
