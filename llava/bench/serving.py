"""Our HF driver against the vLLM plugin on the same questions, side by side in one run.

One random-weight llava-hf checkpoint (LLaVA-1.5-7B width, a few LLM layers, no download) is written
in the published layout. The same question file (one distinct image per question, short answers)
then goes through `llava.eval.runner.run_vqa` (our model, batch size = the concurrency) and through
vLLM with the FasterVLM plugin (requests submitted in waves of the concurrency), at every K.
Reported per K and concurrency: questions/s and time to first token (a wave's prefill with one new
token) for both, and vLLM's ratio over ours. vLLM runs in its own environment, in a subprocess:

    python -m llava.bench.serving --vllm-python .venv-vllm/bin/python --out outputs/bench/serving
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORKER = "llava.bench.serving_worker"
QUESTION = "What is in the picture?\nAnswer the question using a single word or phrase."


def write_checkpoint(folder: Path, arch: str, llm_layers: int, dtype: str) -> Path:
    """A random `arch` LLaVA-1.5 saved as a published-layout llava-hf folder with tokenizer and processor."""
    import torch
    from transformers import LlavaProcessor

    from llava.model.hf_layout import publish_llava_hf_layout, to_hf_model

    from .models import build_random_model, random_image_processor, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    image_token_id = len(tokenizer)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = build_random_model(arch, llm_layers, torch_dtype, "cpu", vocab_size=len(tokenizer))
    hf = to_hf_model(model, image_token_id)
    del model
    hf.save_pretrained(folder)
    del hf
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_processor = random_image_processor()
    image_processor.save_pretrained(folder)  # preprocessor_config.json, which our loader reads
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(folder)
    publish_llava_hf_layout(folder)
    return folder


def write_images(folder: Path, n: int) -> list[str]:
    """`n` distinct images (so no question shares a vision pass or a prefix with another)."""
    from PIL import Image

    names = []
    for i in range(n):
        name = f"im{i}.png"
        Image.linear_gradient("L").convert("RGB").resize((300 + 7 * i, 260 + 5 * i)).rotate(11 * i).save(folder / name)
        names.append(name)
    return names


def time_hf(model_dir: Path, images: list[str], folder: Path, ks: list[int | None], waves: list[int],
            new_tokens: int, dtype: str) -> list[dict]:
    """Our runner: questions/s at batch size c, and TTFT as one batch of c with a single new token."""
    import torch

    from llava.eval.runner import GenerationArgs, VQAItem, run_vqa
    from llava.model.builder import load_pretrained_model
    from llava.pruning import PruningConfig

    tokenizer, model, processor, _ = load_pretrained_model(str(model_dir), device="cpu", torch_dtype=dtype)
    items = [VQAItem(f"q{i}", QUESTION, [name]) for i, name in enumerate(images)]
    rows = []
    with torch.inference_mode():
        for k in ks:
            model.pruning = PruningConfig(visual_token_num=k)
            for c in waves:
                def answer(subset, tokens):
                    start = time.perf_counter()
                    run_vqa(model, tokenizer, processor, subset, str(folder / "hf.jsonl"), "vicuna_v1",
                            GenerationArgs(temperature=0, max_new_tokens=tokens), "bench", image_folder=str(folder),
                            batch_size=c, resume=False, share_prefix=False, vision_cache_size=0)
                    return time.perf_counter() - start

                answer(items[:c], 1)  # warm-up
                ttft = answer(items[:c], 1)
                total = answer(items, new_tokens)
                rows.append(dict(engine="hf", k=k, concurrency=c, qps=len(items) / total, ttft_s=ttft))
    return rows


def time_vllm(python: str, model_dir: Path, images: list[str], folder: Path, ks: list[int | None],
              waves: list[int], new_tokens: int, dtype: str) -> list[dict]:
    """The plugin in vLLM's environment (a subprocess per K: the budget is per server)."""
    rows = []
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4"),
           "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "TOKENIZERS_PARALLELISM": "false"}
    for k in ks:
        job = folder / "vllm_job.json"
        out = folder / "vllm_out.json"
        job.write_text(json.dumps(dict(model=str(model_dir), k=k, dtype=dtype, waves=waves, new_tokens=new_tokens,
                                       prompt=prompt_text(), images=[str(folder / n) for n in images])))
        result = subprocess.run([python, "-m", WORKER, str(job), str(out)], capture_output=True, text=True,
                                env=env, timeout=3600)
        if result.returncode != 0:
            raise RuntimeError(f"vLLM worker failed at K={k}:\n{result.stderr[-4000:]}")
        rows += [dict(engine="vllm", k=k, **row) for row in json.loads(out.read_text())]
    return rows


def prompt_text() -> str:
    """The prompt our driver builds (vicuna_v1 template, `<image>` placeholder), as text for vLLM."""
    from llava.eval.runner import build_prompt

    return build_prompt(QUESTION, "vicuna_v1", True)


def ratios(rows: list[dict]) -> list[dict]:
    """Per (K, concurrency): both engines' numbers and vLLM over ours."""
    out = []
    for r in (r for r in rows if r["engine"] == "hf"):
        v = next(x for x in rows if x["engine"] == "vllm" and x["k"] == r["k"] and x["concurrency"] == r["concurrency"])
        out.append(dict(k=r["k"], concurrency=r["concurrency"], hf_qps=r["qps"], vllm_qps=v["qps"],
                        qps_ratio=v["qps"] / r["qps"], hf_ttft_s=r["ttft_s"], vllm_ttft_s=v["ttft_s"],
                        ttft_ratio=r["ttft_s"] / v["ttft_s"]))
    return out


def markdown(table: list[dict]) -> str:
    lines = ["| K | concurrency | HF q/s | vLLM q/s | vLLM / HF | HF TTFT (s) | vLLM TTFT (s) | TTFT HF / vLLM |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(f"| {'all' if r['k'] is None else r['k']} | {r['concurrency']} | {r['hf_qps']:.2f} | "
                     f"{r['vllm_qps']:.2f} | {r['qps_ratio']:.2f}x | {r['hf_ttft_s']:.2f} | {r['vllm_ttft_s']:.2f} | "
                     f"{r['ttft_ratio']:.2f}x |")
    return "\n".join(lines)


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for k in sorted({r["k"] or 576 for r in table}):
        rows = [r for r in table if (r["k"] or 576) == k]
        ax.plot([r["concurrency"] for r in rows], [r["qps_ratio"] for r in rows], marker="o", label=f"K = {k}")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("concurrency (HF batch size / vLLM wave)")
    ax.set_ylabel("questions/s, vLLM / HF")
    ax.set_title("vLLM plugin vs our HF driver (random weights, CPU)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _ks(text: str) -> list[int | None]:
    return [None if t in ("all", "576") else int(t) for t in text.split(",")]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m llava.bench.serving", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vllm-python", default=os.environ.get("FASTERVLM_VLLM_PYTHON", ".venv-vllm/bin/python"),
                   help="python of the vLLM environment (scripts/make_vllm_env.sh)")
    p.add_argument("--arch", default="llava-v1.5-7b", help="shape of the random checkpoint")
    p.add_argument("--llm-layers", type=int, default=2)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--questions", type=int, default=16, help="questions, one distinct image each")
    p.add_argument("--visual-token-num", type=_ks, default=[None, 58], help="K values; 576 or 'all' = no pruning")
    p.add_argument("--concurrency", default="1,4,8", help="HF batch sizes = vLLM waves")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--out", default="outputs/bench/serving", help="serving.json, serving.md and serving.png go here")
    args = p.parse_args(argv)
    if not Path(args.vllm_python).is_file():
        raise SystemExit(f"--vllm-python {args.vllm_python} not found; build it with scripts/make_vllm_env.sh")
    args.vllm_python = os.path.abspath(args.vllm_python)  # not resolved: a venv's python is a symlink
    waves = [int(c) for c in args.concurrency.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fastervlm-serving-") as tmp:
        folder = Path(tmp)
        model_dir = write_checkpoint(folder / "ckpt", args.arch, args.llm_layers, args.dtype)
        images = write_images(folder, args.questions)
        rows = time_hf(model_dir, images, folder, args.visual_token_num, waves, args.max_new_tokens, args.dtype)
        rows += time_vllm(args.vllm_python, model_dir, images, folder, args.visual_token_num, waves,
                          args.max_new_tokens, args.dtype)
    table = ratios(rows)
    result = dict(arch=args.arch, llm_layers=args.llm_layers, dtype=args.dtype, questions=args.questions,
                  max_new_tokens=args.max_new_tokens, rows=rows, table=table)
    (out / "serving.json").write_text(json.dumps(result, indent=1))
    (out / "serving.md").write_text(markdown(table) + "\n")
    plot(table, out / "serving.png")
    print(markdown(table))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
