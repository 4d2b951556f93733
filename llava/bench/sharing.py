"""Questions/s of the evaluation runner, plain path against shared work, side by side in one run.

Question files shaped like the benchmarks (questions per image: GQA 32, POPE 18, MME 2, and 1 as the
no-sharing control; short answers) go through `llava.eval.runner.run_vqa` twice per K:
- the plain path: every question runs the tower on its image and prefills its whole prompt
  (`--no-share-prefix --vision-cache-size 0`). Its cost per question does not depend on how the
  questions group by image, so it is timed on the first `--plain-questions` of each file, at each
  `--plain-batch-sizes` on the first shape and at the fastest of them on the others;
- the shared path (the runner's default): one vision pass per image, one prefix prefill per image
  and K, every question continued from it (an image with one question takes the plain path).

It reports questions/s and the speedup, a stage breakdown in seconds per question (vision, prefix
prefill, question prefill, decode; timed on one batch with the model's own calls), the share of
answers whose tokens equal the plain path's and, for each that differs, whether the first differing
token sits at a logit tie of the plain path (top-2 gap below 2^-7 relative: bf16 round-off), the
process's peak RSS, and a plot of speedup against questions per image. Random weights, no download;
the default is 7B width, 2 LLM layers, bf16 (about 5 minutes on 2 quiet cores):

    python -m llava.bench.sharing --out bench_out/sharing
    python -m llava.bench.sharing --arch tiny --dtype float32 --shapes mme,single   # seconds
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from llava.eval.runner import GenerationArgs, VQAItem, _collate, _PromptDataset, run_vqa
from llava.model.shared_prefix import PrefixStore, generate_shared
from llava.pruning.config import PruningConfig

from .measure import _read_status_kb, rss_bytes

SHAPES = {"gqa": 32, "pope": 18, "mme": 2, "single": 1}  # questions per image
_QUESTIONS = ["Is the sky blue?", "What color is the car?", "Is there a dog in the image?", "How many people?",
              "Which side is the tree on?", "What is the man holding?", "Is it sunny?", "What is on the table?"]
SUFFIX = "\nAnswer the question using a single word or phrase."
CONV = "vicuna_v1"
TIE = 2**-7  # a top-2 logit gap below this, relative to the top logit, is within bf16 round-off
VISION_CACHE_DEFAULT = inspect.signature(run_vqa).parameters["vision_cache_size"].default


def shaped_items(shape: str, images: int) -> list[VQAItem]:
    """`images` x SHAPES[shape] questions, written image after image (as the benchmarks' files are)."""
    per = SHAPES[shape]
    return [VQAItem(f"{shape}-{i}-{q}", f"{_QUESTIONS[(i + q) % len(_QUESTIONS)]} ({q}){SUFFIX}", [f"im{i}.png"])
            for i in range(images) for q in range(per)]


def images_for(shape: str, min_questions: int) -> int:
    """Images of a shape's file: enough for `min_questions` questions, at least one."""
    return max(1, math.ceil(min_questions / SHAPES[shape]))


def _trim(tokens: torch.Tensor, eos: int | None) -> list[int]:
    """New tokens up to and including the first EOS (later steps are padding)."""
    out = []
    for t in tokens.tolist():
        out.append(t)
        if t == eos:
            break
    return out


def _time_run(model, tok, proc, items, folder: Path, name: str, *, share: bool, batch_size: int,
              new_tokens: int) -> tuple[float, dict]:
    """Seconds of one runner pass and, per question key, (new tokens [T], logits [T, V])."""
    path = folder / f"{name}.jsonl"
    gen = GenerationArgs(temperature=0, max_new_tokens=new_tokens)
    generated = {}

    def keep(key, k, tokens, logits):
        generated[key] = (tokens, logits)

    start = time.perf_counter()
    run_vqa(model, tok, proc, items, str(path), CONV, gen, "bench", image_folder=str(folder),
            batch_size=batch_size, resume=False, share_prefix=share,
            vision_cache_size=VISION_CACHE_DEFAULT if share else 0, on_generated=keep)
    return time.perf_counter() - start, generated


def compare(plain: dict, shared: dict, eos: int | None) -> tuple[int, list[dict]]:
    """Answers compared (the plain path's keys) and, for each whose tokens differ, where and at what gap."""
    differing = []
    for key, (tokens, logits) in plain.items():
        a, b = _trim(tokens, eos), _trim(shared[key][0], eos)
        if a == b:
            continue
        step = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        row = logits[min(step, logits.shape[0] - 1)].float()
        top = row.topk(2).values
        gap = float(top[0] - top[1])
        rel = gap / max(abs(float(top[0])), 1e-12)
        chosen = (float(row[a[step]] - row[b[step]]) if step < min(len(a), len(b)) else None)
        differing.append(dict(question=key[0], step=step, top2_gap=gap, top2_gap_relative=rel,
                              chosen_gap=chosen, at_tie=rel < TIE))
    return len(plain), differing


class _Stamps(LogitsProcessor):
    """Notes the time at each step's logits: the first is the end of the prefill."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids, scores):
        self.times.append(time.perf_counter())
        return scores


def _inputs(model, tok, proc, items, folder: Path):
    """input_ids, mask and pixel rows of `items` as the runner builds them (its dataset and collate)."""
    dataset = _PromptDataset(items, tok, proc, model.config, CONV, str(folder), model.pruning.anyres_mode)
    _, ids, mask, pixels, sizes, _ = _collate(tok.pad_token_id or 0)([dataset[i] for i in range(len(items))])
    device = model.get_model().embed_tokens.weight.device
    return ids.to(device), mask.to(device), pixels.to(device=device, dtype=model.get_vision_tower().dtype)


def stage_breakdown(model, tok, proc, folder: Path, *, plain_batch: int, shared_batch: int,
                    new_tokens: int) -> dict:
    """Seconds of each stage on one batch of questions about one image, with the model's own calls.

    Plain (plain_batch questions): vision (the tower on every question's image), prefill (splice +
    whole prompt, to the first token), decode (the other tokens), each per question. Shared
    (shared_batch questions): vision and prefix (the prefix prefill) per image; question prefill
    (splice + the questions' suffixes on the prefix, to the first token) and decode per question.
    """
    n = max(plain_batch, shared_batch)
    items = shaped_items("gqa", 1)[:n]
    kw = dict(do_sample=False, max_new_tokens=new_tokens, pad_token_id=tok.pad_token_id or 0)
    out = {}
    ids, mask, pixels = _inputs(model, tok, proc, items[:plain_batch], folder)
    start = time.perf_counter()
    signals = model.vision_signals(pixels)  # [b, 3, S, S]: one tower run per question
    vision = time.perf_counter()
    stamps = _Stamps()
    model.generate(ids, attention_mask=mask, vision_signals=signals, logits_processor=LogitsProcessorList([stamps]), **kw)
    end = time.perf_counter()
    out["plain"] = dict(vision=(vision - start) / plain_batch, prefill=(stamps.times[0] - vision) / plain_batch,
                        decode=(end - stamps.times[0]) / plain_batch)
    ids, mask, pixels = _inputs(model, tok, proc, items[:shared_batch], folder)
    start = time.perf_counter()
    signals = model.vision_signals(pixels[:1])  # one tower run for the image
    vision = time.perf_counter()
    store, stamps = PrefixStore(), _Stamps()
    generate_shared(model, ids, mask, [("image", None)] * shared_batch, store,
                    vision_signals=signals.index([0] * shared_batch), logits_processor=LogitsProcessorList([stamps]),
                    **kw)
    end = time.perf_counter()
    out["shared"] = dict(vision_per_image=vision - start, prefix_per_image=store.seconds,
                         question_prefill=(stamps.times[0] - vision - store.seconds) / shared_batch,
                         decode=(end - stamps.times[0]) / shared_batch)
    return out


def predicted_speedup(stages: dict, per_image: int) -> float:
    """Plain seconds per question over shared ones, from the stages, at `per_image` questions per image."""
    plain = sum(stages["plain"].values())
    if per_image == 1:  # the runner answers an image's only question by the plain path
        return 1.0
    s = stages["shared"]
    shared = (s["vision_per_image"] + s["prefix_per_image"]) / per_image + s["question_prefill"] + s["decode"]
    return plain / shared


def run(model, tok, proc, *, shapes: list[str], min_questions: int, ks: list[int | None], plain_batches: list[int],
        plain_questions: int, shared_batch: int, new_tokens: int, method: str = "fastervlm",
        repeats: int = 1, breakdown: bool = True) -> tuple[list[dict], dict, list[dict]]:
    """Rows per (shape, K), stage breakdowns per K, and every differing answer."""
    from .models import sample_images

    rows, stages, differing = [], {}, []
    best: dict = {}  # K -> the plain path's fastest batch size (found on the first shape)
    eos = tok.eos_token_id
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        count = {s: images_for(s, min_questions) for s in shapes}
        for i, image in enumerate(sample_images(max(count.values()))):
            image.save(folder / f"im{i}.png")
        for k in ks:  # warm-up (first calls of each shape allocate): one image, both paths, not timed
            with model.pruning_config(PruningConfig(method=method, visual_token_num=k)):
                for share in (False, True):
                    _time_run(model, tok, proc, shaped_items("mme", 1), folder, "warmup", share=share,
                              batch_size=2, new_tokens=new_tokens)
        for shape in shapes:
            items = shaped_items(shape, count[shape])
            subset = items[:plain_questions] if plain_questions else items
            for k in ks:
                with model.pruning_config(PruningConfig(method=method, visual_token_num=k)):
                    tried = [best[k]] if k in best else plain_batches
                    plain, shared_s = {}, float("inf")
                    for _ in range(repeats):  # the paths take turns, so a change of the machine's load hits both
                        for b in tried:
                            t, answers = _time_run(model, tok, proc, subset, folder, f"plain{b}", share=False,
                                                   batch_size=b, new_tokens=new_tokens)
                            plain[b] = min(plain.get(b, (t, answers)), (t, answers), key=lambda x: x[0])
                        t, shared = _time_run(model, tok, proc, items, folder, "shared", share=True,
                                              batch_size=shared_batch, new_tokens=new_tokens)
                        shared_s = min(shared_s, t)
                    if breakdown and k not in stages:
                        stages[k] = stage_breakdown(model, tok, proc, folder, plain_batch=min(tried, key=lambda b: plain[b][0]),
                                                    shared_batch=shared_batch, new_tokens=new_tokens)
                b = best.setdefault(k, min(plain, key=lambda b: plain[b][0]))
                plain_qps = len(subset) / plain[b][0]
                shared_qps = len(items) / shared_s
                compared, diff = compare(plain[b][1], shared, eos)
                differing += [dict(shape=shape, k=k, **d) for d in diff]
                rows.append(dict(shape=shape, questions_per_image=SHAPES[shape], images=count[shape],
                                 questions=len(items), plain_questions=len(subset), k=k, plain_batch=b,
                                 plain_qps=plain_qps, shared_batch=shared_batch, shared_qps=shared_qps,
                                 speedup=shared_qps / plain_qps, compared=compared, differing=len(diff),
                                 at_tie=sum(d["at_tie"] for d in diff), agreement=1 - len(diff) / compared,
                                 predicted=predicted_speedup(stages[k], SHAPES[shape]) if k in stages else None))
    return rows, stages, differing


def _k(k) -> str:
    return "576 (all)" if k is None else str(k)


def markdown(rows: list[dict], stages: dict) -> str:
    lines = ["| shape | q/image | K | plain q/s (batch) | shared q/s (batch) | speedup | from stages | "
             "answers equal | differing at a tie |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        pred = f"{r['predicted']:.2f}x" if r.get("predicted") else "-"
        lines.append(f"| {r['shape']} | {r['questions_per_image']} | {_k(r['k'])} | {r['plain_qps']:.2f} "
                     f"({r['plain_batch']}) | {r['shared_qps']:.2f} ({r['shared_batch']}) | {r['speedup']:.2f}x | "
                     f"{pred} | {r['compared'] - r['differing']}/{r['compared']} | {r['at_tie']}/{r['differing']} |")
    if stages:
        lines += ["", "| K | path | vision | prefix prefill | question prefill | decode |", "|---:|---|---:|---:|---:|---:|"]
        for k, s in stages.items():
            p, q = s["plain"], s["shared"]
            lines.append(f"| {_k(k)} | plain, s/question | {p['vision']:.3f} | - | {p['prefill']:.3f} (whole prompt) | "
                         f"{p['decode']:.3f} |")
            lines.append(f"| {_k(k)} | shared, s/image | {q['vision_per_image']:.3f} | {q['prefix_per_image']:.3f} | - | - |")
            lines.append(f"| {_k(k)} | shared, s/question | - | - | {q['question_prefill']:.3f} | {q['decode']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Speedup against questions per image, one line per K (log x)."""
    from llava.analysis.common import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    for k in dict.fromkeys(r["k"] for r in rows):
        pts = sorted((r["questions_per_image"], r["speedup"]) for r in rows if r["k"] == k)
        ax.plot(*zip(*pts), marker="o", label=f"K = {_k(k)}")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("questions per image")
    ax.set_ylabel("shared / plain questions/s")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ks(text: str) -> list[int | None]:
    return [None if t in ("all", "576") else int(t) for t in text.split(",")]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava.bench.sharing", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="llava-v1.5-7b", help="LLaVA-1.5 shape with random weights (tiny, llava-v1.5-7b, ...)")
    p.add_argument("--llm-layers", type=int, default=2, help="run only the first N LLM layers")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--shapes", default="gqa,pope,mme,single", help=f"of {', '.join(SHAPES)}")
    p.add_argument("--min-questions", type=int, default=8,
                   help="questions per shape at least (images = this / questions per image, at least 1)")
    p.add_argument("--plain-questions", type=int, default=8,
                   help="questions of each file the plain path is timed on (0: all)")
    p.add_argument("--visual-token-num", type=_ks, default=[None, 64], help="K values; 576 or 'all' = no pruning")
    p.add_argument("--plain-batch-sizes", default="1,8", help="batch sizes tried for the plain path (best counts)")
    p.add_argument("--batch-size", type=int, default=8, help="batch size of the shared path")
    p.add_argument("--max-new-tokens", type=int, default=2, help="answer length (short, as GQA/POPE/MME)")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed runs per configuration, the paths taking turns (the fastest counts)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the stage breakdown")
    p.add_argument("--out", default=None, help="write sharing.json, sharing.md and sharing.png into this folder")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown --shapes {unknown}; choose from {', '.join(SHAPES)}")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    from .models import build_random_model, random_image_processor, tiny_tokenizer

    begin = time.perf_counter()
    tok = tiny_tokenizer()
    if args.arch == "tiny":
        from llava.model.tiny import build_tiny_model

        model = build_tiny_model(len(tok)).to(dtype=dtype).eval()
    else:
        model = build_random_model(args.arch, args.llm_layers, dtype, "cpu", vocab_size=len(tok))
    rss0 = rss_bytes()
    with torch.inference_mode():
        rows, stages, differing = run(
            model, tok, random_image_processor(), shapes=shapes, min_questions=args.min_questions,
            ks=args.visual_token_num, plain_batches=[int(b) for b in args.plain_batch_sizes.split(",")],
            plain_questions=args.plain_questions, shared_batch=args.batch_size, new_tokens=args.max_new_tokens,
            repeats=args.repeats, breakdown=not args.no_breakdown)
    result = dict(arch=args.arch, llm_layers=args.llm_layers if args.arch != "tiny" else None, dtype=args.dtype,
                  threads=torch.get_num_threads(), rows=rows, stages={_k(k): s for k, s in stages.items()},
                  differing=differing, vision_cache_size=VISION_CACHE_DEFAULT, rss_after_load_mb=rss0 / 2**20,
                  peak_rss_mb=(_read_status_kb("VmHWM") or rss_bytes()) / 2**20,
                  seconds=time.perf_counter() - begin)
    table = markdown(rows, stages)
    print(table)
    for d in differing:
        print(f"differs: {d['shape']} K={_k(d['k'])} {d['question']} at token {d['step']}: plain top-2 gap "
              f"{d['top2_gap']:.4g} ({d['top2_gap_relative']:.2%} of the top logit){', a tie' if d['at_tie'] else ''}")
    print(f"peak RSS {result['peak_rss_mb']:.0f} MiB (after loading {result['rss_after_load_mb']:.0f} MiB), "
          f"vision cache {VISION_CACHE_DEFAULT} images; {result['seconds']:.0f} s in all")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "sharing.json").write_text(json.dumps(result, indent=1))
        (out / "sharing.md").write_text(table + "\n")
        plot(rows, out / "sharing.png")
    return result


if __name__ == "__main__":
    main()
