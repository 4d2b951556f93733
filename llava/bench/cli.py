"""Benchmark LLaVA with visual-token pruning: per-stage time (vision, [CLS] scoring, selection, projector,
splice, prefill = time to first token, decode per token, end to end), peak memory, KV-cache bytes and
analytic FLOPs, for a list of K, methods and batch sizes; `--baseline` adds the original FasterVLM path,
`--headline` measures P1/P2/P3 side by side and `--efficiency` every method x budget (FLOPs with in-LLM drops
counted per layer, LLM prefill, TTFT, decode, KV cache, memory). Writes JSON, a Markdown table and a PNG of speed vs K
(see docs/PERFORMANCE.md)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from llava.pruning import get_method, parse_method_args

from . import flops as F
from .measure import PeakMemory, load_average, machine_info, matmul_probe, wait_until_quiet
from .family_flops import FAMILY_ARCHS
from .models import ARCHS, build_random_model, load_model, make_batch, random_image_processor, tiny_tokenizer
from .report import headline_markdown, sweep_markdown, write_outputs
from .sweep import Config, Gate, add_speedups, run_configs
from .video import VIDEO_ARCHS, is_video_arch

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None


def _family_checkpoint(path: str | None) -> bool:
    """Whether `path` is a checkpoint of a processor family that the timed family bench runs."""
    if not path:
        return False
    from llava.model.builder import read_config, resolve_pretrained_dir

    from .family_bench import FAMILY_STEPS

    try:
        return read_config(resolve_pretrained_dir(path)).get("model_type") in FAMILY_STEPS
    except (OSError, ValueError):
        return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m llava.bench", description=__doc__)
    src = p.add_argument_group("model")
    src.add_argument("--arch", choices=sorted(ARCHS) + sorted(FAMILY_ARCHS) + sorted(VIDEO_ARCHS), default=None,
                     help="build this LLaVA-1.5 shape with random weights (7b/13b need --random-weights); the "
                          f"processor families ({', '.join(FAMILY_ARCHS)}) report analytic FLOPs per stage for "
                          "--image-size (llava.bench.family_flops), and with --random-weights build the released "
                          "shape (LLM cut to --llm-layers, default 2) and time it (llava.bench.family_bench); "
                          "video-llava-7b: Video-LLaVA-7B, 8 frames per video, with --efficiency (K per frame)")
    src.add_argument("--image-size", default=None,
                     help="HEIGHTxWIDTH of the image of a processor family (default 480x640 for FLOPs only, "
                          "672x672 for a timed run)")
    src.add_argument("--random-weights", action="store_true", help="confirm random weights for --arch (no download)")
    src.add_argument("--model-path", default=None, help="a real checkpoint folder (or cached hub id)")
    src.add_argument("--vision-tower", default=None, help="local CLIP folder overriding mm_vision_tower")
    src.add_argument("--llm-layers", type=int, default=None, help="run only the first N LLM layers")
    src.add_argument("--dtype", choices=sorted(_DTYPES), default=None,
                     help="default: bfloat16 on CPU (see docs/PERFORMANCE.md), float16 on CUDA")
    src.add_argument("--device", default="auto", help="cpu, cuda or auto")
    src.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    src.add_argument("--seed", type=int, default=0)
    run = p.add_argument_group("sweep")
    run.add_argument("--visual-token-num", type=_ints, default=None,
                     help="K values, e.g. 576,144,64 (default 576,144,64; with --efficiency 192,128,64; with a "
                          "video arch K per frame, default 192,128,64,26,13)")
    run.add_argument("--pruning-method", default=None,
                     help="comma-separated registered methods (default fastervlm; with --efficiency "
                          "none,fastervlm,fastv,pdrop,dart, where 'none' is the unpruned row)")
    run.add_argument("--pruning-args", default=None, help='method options "key=value,..."')
    run.add_argument("--batch-size", type=_ints, default=[1], help="batch sizes, e.g. 1,8")
    run.add_argument("--baseline", action="store_true",
                     help="also time the original FasterVLM path (eager CLIP with all maps, project all 576) at batch 1")
    run.add_argument("--max-new-tokens", type=int, default=None,
                     help="greedy tokens per answer (EOS does not stop); default 8, with --headline 2 for P2, "
                          "with --efficiency 3")
    run.add_argument("--warmup", type=int, default=1, help="untimed passes per config (the last measures memory)")
    run.add_argument("--repeats", type=int, default=3, help="timed rounds (configs interleaved)")
    run.add_argument("--conv-mode", default="vicuna_v1")
    run.add_argument("--max-other-load", type=float, default=0.10,
                     help="re-run a timed pass when other processes used more than this share of the CPU meanwhile")
    run.add_argument("--retries", type=int, default=3, help="re-runs allowed per timed pass (0: keep every pass)")
    run.add_argument("--wait-quiet", type=float, default=60,
                     help="seconds to wait, before each measured section, for other processes to go quiet")
    run.add_argument("--out", default="outputs/bench", help="output folder for JSON, Markdown and PNG")
    eff = p.add_argument_group("efficiency per method (FasterVLM's efficiency table)")
    eff.add_argument("--efficiency", action="store_true",
                     help="every method x budget side by side at 7B dims (8 LLM layers) unless --arch/--model-path/"
                          "--llm-layers say otherwise: FLOPs, LLM prefill, TTFT, decode, KV cache, peak memory")
    eff.add_argument("--keep-fractions", type=_floats, default=None,
                     help="timed processor-family run: kept fractions of each image's N_i tokens (default "
                          "0.5,0.25,0.11), for every method (fastervlm, fastv where the family runs it)")
    eff.add_argument("--method-args", action="append", default=None, metavar="METHOD:key=value,...",
                     help="options of one method in --efficiency (repeatable), e.g. pdrop:layers=2:4:6,lambda=0.5")
    eff.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                     help="--efficiency times in wall seconds, or in this process's CPU seconds (all threads): "
                          "the work done, which other processes on a busy shared CPU barely change")
    eff.add_argument("--fastv-rounds", type=int, default=5,
                     help="--efficiency: rounds of FastV's prefill-only check (none vs FastV at each budget, adjacent "
                          "passes); 0 skips it and judges FastV from the table's rounds")
    eff.add_argument("--efficiency-layers", type=int, default=8,
                     help="LLM layers for --efficiency with random weights (FastV's layer 2 of 8)")
    head = p.add_argument_group("headline (P1, P2, P3)")
    head.add_argument("--headline", action="store_true",
                      help="P1/P2/P3 at 7B dims with random weights, unless --arch/--model-path say otherwise")
    head.add_argument("--p1-rounds", type=int, default=7)
    head.add_argument("--p2-k", type=_ints, default=[576, 288, 144, 64], help="K sweep for P2's table and plot")
    head.add_argument("--p2-pruned-k", type=int, default=64, help="P2 compares this K with the largest K")
    head.add_argument("--p2-layers", type=int, default=8, help="LLM layers for P2")
    head.add_argument("--p2-rounds", type=int, default=5)
    head.add_argument("--p3-layers", type=int, default=None,
                      help="LLM layers of the medium model for P3 (default: 2 with --arch, all with --model-path)")
    head.add_argument("--p3-batch", type=int, default=8)
    head.add_argument("--p3-k", type=int, default=64)
    head.add_argument("--p3-new-tokens", type=int, default=32)
    head.add_argument("--p3-rounds", type=int, default=2)
    return p


def _setup(args) -> tuple:
    """(tokenizer, model, image_processor, device, dtype, description) from the model arguments."""
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _DTYPES[args.dtype] if args.dtype else (torch.float16 if device == "cuda" else torch.bfloat16)
    if args.model_path:
        tokenizer, model, processor = load_model(args.model_path, str(dtype).replace("torch.", ""), device,
                                                 args.vision_tower, args.llm_layers)
        if getattr(model.config, "image_aspect_ratio", None) == "anyres":
            raise SystemExit(f"{args.model_path}: anyres (LLaVA-1.6) checkpoints are not supported by the benchmark "
                             "yet; it times the single-view LLaVA-1.5 path")
        return tokenizer, model, processor, device, dtype, args.model_path
    arch = args.arch or "llava-v1.5-7b"
    if arch not in ("tiny", "video-llava-tiny") and not args.random_weights and not args.headline:
        raise SystemExit(f"--arch {arch} builds random weights: add --random-weights, or give --model-path")
    tokenizer = tiny_tokenizer()
    if is_video_arch(arch):
        from .video import build_random_video_model, video_processor

        model = build_random_video_model(arch, args.llm_layers, dtype, device, args.seed)
        return tokenizer, model, video_processor(), device, dtype, f"{arch} (random weights)"
    if arch == "tiny":
        from llava.model.tiny import build_tiny_model

        model = build_tiny_model(len(tokenizer), args.seed).to(device=device, dtype=dtype)
        if args.llm_layers is not None and args.llm_layers < len(model.get_model().layers):
            from .models import with_llm_layers

            model = with_llm_layers(model, args.llm_layers)
    else:
        model = build_random_model(arch, args.llm_layers, dtype, device, args.seed)
    return tokenizer, model, random_image_processor(), device, dtype, f"{arch} (random weights)"


def _settings(args, model, dtype, description) -> dict:
    return {
        "model": description, "arch": args.arch or ("llava-v1.5-7b" if not args.model_path else args.model_path),
        "llm_layers": len(model.get_model().layers), "dtype": str(dtype).replace("torch.", ""),
        "dims": F.ModelDims.from_model(model).to_dict(), "warmup": args.warmup, "repeats": args.repeats,
        "max_new_tokens": args.max_new_tokens, "conv_mode": args.conv_mode,
    }


def run_family_flops(args) -> dict:
    """`--arch` of a processor family: the analytic FLOPs per stage, per K and batch size, for one image size."""
    import json

    from .family_flops import _size, family_pipeline_flops

    if args.headline or args.efficiency or args.baseline or args.model_path:
        raise SystemExit(f"--arch {args.arch} reports FLOPs only: --headline, --efficiency, --baseline and "
                         "--model-path time the LLaVA-1.5 path (add --random-weights for the family's own timed run)")
    size = _size(args.image_size or "480x640")
    new_tokens = args.max_new_tokens or 8
    rows = [family_pipeline_flops(args.arch, size, k, new_tokens=new_tokens, batch=b)
            for b in args.batch_size for k in [None, *(args.visual_token_num or [256, 128, 64])]]
    result = {"arch": args.arch, "image_size": list(size), "flops_convention": F.CONVENTION, "runs": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"flops_{args.arch}.json").write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{args.arch} {r['resized']} K={r['visual_tokens']}/{r['visual_tokens_unpruned']}: "
              f"TTFT {r['flops']['ttft'] / 1e12:.3f} TFLOPs, e2e {r['flops']['e2e'] / 1e12:.3f} TFLOPs")
    return result


def run_sweep(args) -> dict:
    tokenizer, model, processor, device, dtype, description = _setup(args)
    with torch.inference_mode():
        return _sweep(args, tokenizer, model, processor, device, dtype, description)


def _sweep(args, tokenizer, model, processor, device, dtype, description) -> dict:
    methods = [m.strip() for m in (args.pruning_method or "fastervlm").split(",") if m.strip()]
    args.max_new_tokens = args.max_new_tokens or 8
    args.visual_token_num = args.visual_token_num or [576, 144, 64]
    for m in methods:
        get_method(m)
    method_args = parse_method_args(args.pruning_args)
    configs = [Config("ours", m, k, b) for m in methods for b in args.batch_size for k in args.visual_token_num]
    if args.baseline:
        configs += [Config("original", "fastervlm", k, 1) for k in args.visual_token_num]
    batches = {b: make_batch(tokenizer, processor, model.config, b, device, dtype, args.conv_mode)
               for b in sorted({c.batch for c in configs})}
    started, load0 = time.time(), load_average()
    gate = Gate(args.max_other_load, args.retries, min(args.wait_quiet, 30))
    if args.wait_quiet > 0:
        wait_until_quiet(args.max_other_load, args.wait_quiet)
    rows = run_configs(model, configs, batches, method_args=method_args, new_tokens=args.max_new_tokens,
                       warmup=args.warmup, repeats=args.repeats, device=device, gate=gate)
    add_speedups(rows)
    result = {
        "machine": machine_info(device), "settings": _settings(args, model, dtype, description),
        "flops_convention": F.CONVENTION, "memory_measure": PeakMemory(device).what,
        "load_average": {"start": load0, "end": load_average()}, "wall_seconds": time.time() - started,
        "passes_rerun_busy_machine": gate.discarded, "runs": rows,
    }
    paths = write_outputs(result, Path(args.out), "bench", sweep_markdown(result), f"{description}, {result['settings']['dtype']}")
    print(sweep_markdown(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return result


def run_efficiency_mode(args) -> dict:
    started, load0 = time.time(), load_average()
    if args.llm_layers is None and not args.model_path:
        top = {**ARCHS, **VIDEO_ARCHS}[args.arch or "llava-v1.5-7b"]["text"]["num_hidden_layers"]
        args.llm_layers = min(args.efficiency_layers, top)
    args.random_weights = args.random_weights or not args.model_path
    if args.model_path and args.llm_layers is not None and _is_video_checkpoint(args.model_path):
        raise SystemExit(f"{args.model_path}: a Video-LLaVA checkpoint runs at its full depth in the bench; "
                         "drop --llm-layers (or use --arch video-llava-7b --llm-layers N for random weights)")
    tokenizer, model, processor, device, dtype, description = _setup(args)
    print(f"model: {description}, {len(model.get_model().layers)} LLM layers, {dtype}; "
          f"built in {time.time() - started:.1f} s")
    with torch.inference_mode():
        return _efficiency(args, tokenizer, model, processor, device, dtype, description, started, load0)


def _is_video_checkpoint(path: str) -> bool:
    """A local folder whose config.json says model_type video_llava."""
    import json

    try:
        return json.loads((Path(path) / "config.json").read_text()).get("model_type") == "video_llava"
    except (OSError, ValueError):
        return False


def _efficiency(args, tokenizer, model, processor, device, dtype, description, started, load0) -> dict:
    from .efficiency import DEFAULT_BUDGETS, DEFAULT_METHODS, add_ratios, fastv_check, parse_method_overrides, plan, \
        run_efficiency
    from .report import efficiency_markdown, plot_efficiency

    args.max_new_tokens = args.max_new_tokens or 3

    video = is_video_arch(args.arch) or getattr(model, "get_video_tower", lambda: None)() is not None
    default_methods, default_budgets = DEFAULT_METHODS, DEFAULT_BUDGETS
    if video:  # --visual-token-num is K per frame
        from .video import DEFAULT_FRAME_BUDGETS, DEFAULT_VIDEO_METHODS

        default_methods, default_budgets = DEFAULT_VIDEO_METHODS, DEFAULT_FRAME_BUDGETS
    methods = [m.strip() for m in args.pruning_method.split(",") if m.strip()] if args.pruning_method \
        else list(default_methods)
    for m in methods:
        if m != "none":
            get_method(m)
    if args.pruning_args:
        raise SystemExit("--efficiency runs several methods: give options per method with --method-args METHOD:k=v,...")
    batch_size = args.batch_size[0] if len(args.batch_size) == 1 else None
    if batch_size is None:
        raise SystemExit("--efficiency runs one batch size; give one --batch-size")
    configs = plan(methods, args.visual_token_num or list(default_budgets), len(model.get_model().layers),
                   model.get_vision_tower().num_patches, parse_method_overrides(args.method_args))
    runner = {}
    if video:
        from functools import partial

        from .video import make_video_batch, relabel, video_pass_flops, video_run

        frames_processor = processor if args.arch else model.video_processor  # a checkpoint brings its own
        args.conv_mode = "llava_v1" if args.conv_mode == "vicuna_v1" else args.conv_mode  # Video-LLaVA's template
        batch = make_video_batch(tokenizer, frames_processor, batch_size, model.num_frames, device, dtype,
                                 args.conv_mode)
        runner = dict(run_pass=video_run, flops_of=partial(video_pass_flops, frames=model.num_frames))
    else:
        batch = make_batch(tokenizer, processor, model.config, batch_size, device, dtype, args.conv_mode)
    gate = Gate(args.max_other_load, args.retries, min(args.wait_quiet, 30))
    if args.wait_quiet > 0:
        wait_until_quiet(args.max_other_load, args.wait_quiet)
    print(f"{len(configs)} configurations: " + ", ".join(c.label for c in configs), flush=True)
    rows = run_efficiency(model, batch, configs, new_tokens=args.max_new_tokens, warmup=args.warmup,
                          repeats=args.repeats, device=device, gate=gate, clock=args.clock, **runner)
    if video:
        relabel(rows, model.num_frames)
    add_ratios(rows)
    pairs = None
    fastv_budgets = sorted({c.k for c in configs if c.method == "fastv"}, reverse=True)
    if video and args.fastv_rounds > 0 and fastv_budgets:
        print("FastV: the prefill-only pairs time image batches; on videos FastV is judged from the table's rounds")
    elif args.fastv_rounds > 0 and fastv_budgets:
        from .efficiency import fastv_prefill_pairs

        print("FastV: the LLM prefill alone, none vs each budget in adjacent passes", flush=True)
        fastv_args = dict(next(c.args for c in configs if c.method == "fastv"))
        pairs = fastv_prefill_pairs(model, batch, fastv_budgets, rounds=args.fastv_rounds, device=device,
                                    clock=args.clock, args=fastv_args, gate=gate)
    settings = _settings(args, model, dtype, description)
    settings.update(batch=batch_size, methods=methods, budgets=args.visual_token_num or list(default_budgets),
                    clock=args.clock)
    result = {
        "machine": machine_info(device), "settings": settings, "flops_convention": F.CONVENTION,
        "memory_measure": PeakMemory(device).what, "load_average": {"start": load0, "end": load_average()},
        "wall_seconds": time.time() - started, "passes_rerun_busy_machine": gate.discarded,
        "fastv_check": fastv_check(rows, pairs=pairs), "runs": rows,
    }
    md = efficiency_markdown(result)
    if video:  # the FLOPs model at the checkpoint's full depth, beside the measured rows
        from .video import flops_model_markdown, video_dims, video_flops_model

        settings["frames"] = model.num_frames
        dims = video_dims(args.arch) if args.arch else F.ModelDims.from_model(model)
        text_tokens = int(batch.attention_mask[0].sum()) - 1  # less the <video> mark
        budgets = args.visual_token_num or list(default_budgets)
        result["flops_model"] = video_flops_model(dims, model.num_frames, text_tokens, budgets)
        md += "\n" + flops_model_markdown(result["flops_model"], dims, model.num_frames, text_tokens) + "\n"
    paths = write_outputs(result, Path(args.out), "efficiency", md,
                          f"{description}, {settings['llm_layers']} LLM layers, {settings['dtype']}, batch {batch_size}",
                          plot=plot_efficiency)
    print(md)
    print("wrote " + ", ".join(str(p) for p in paths.values()) + f" in {result['wall_seconds']:.0f} s")
    return result


def run_headline(args) -> dict:
    started, load0 = time.time(), load_average()
    if args.llm_layers is None and not args.model_path:
        top = ARCHS[args.arch or "llava-v1.5-7b"]["text"]["num_hidden_layers"]
        args.llm_layers = min(args.p2_layers, top)
    tokenizer, model, processor, device, dtype, description = _setup(args)
    print(f"model: {description}, {len(model.get_model().layers)} LLM layers, {dtype}; "
          f"built in {time.time() - started:.1f} s")
    with torch.inference_mode():
        return _headline(args, tokenizer, model, processor, device, dtype, description, started, load0)


def _headline(args, tokenizer, model, processor, device, dtype, description, started, load0) -> dict:
    from .headline import batch_throughput, k_sweep, tower_overhead

    probe = None
    if args.arch != "tiny":  # why this dtype: the speed of a 7B FFN matmul in each candidate dtype
        probe = matmul_probe(device, [torch.float32, torch.bfloat16] if device == "cpu" else [torch.float16, torch.bfloat16])
        print(f"matmul probe, GFLOP/s of a [600,4096]x[4096,11008] product: {probe}")
    batch1 = make_batch(tokenizer, processor, model.config, 1, device, dtype, args.conv_mode)
    gates = {}

    def section(name: str) -> Gate:
        if args.wait_quiet > 0:
            wait_until_quiet(args.max_other_load, args.wait_quiet)
        gates[name] = Gate(args.max_other_load, args.retries, min(args.wait_quiet, 30))
        return gates[name]

    print("P1: vision tower paths")
    p1 = tower_overhead(model, batch1.images, rounds=args.p1_rounds, warmup=args.warmup, device=device,
                        gate=section("p1"))
    print("P2: K sweep at batch 1")
    rows, p2 = k_sweep(model, batch1, args.p2_k, pruned_k=args.p2_pruned_k, method="fastervlm",
                       new_tokens=args.max_new_tokens or 2,
                       rounds=args.p2_rounds, warmup=args.warmup, device=device, gate=section("p2"))
    print("P3: batch 1 vs batch %d" % args.p3_batch)
    batch = make_batch(tokenizer, processor, model.config, args.p3_batch, device, dtype, args.conv_mode)
    p3 = batch_throughput(model, batch, k=args.p3_k, method="fastervlm",
                          llm_layers=min(args.p3_layers or (len(model.get_model().layers) if args.model_path else 2),
                                         len(model.get_model().layers)),
                          new_tokens=args.p3_new_tokens, rounds=args.p3_rounds, warmup=args.warmup, device=device,
                          gate=section("p3"))
    settings = _settings(args, model, dtype, description)
    settings.update(rounds_p1=args.p1_rounds, rounds_p2=args.p2_rounds, rounds_p3=args.p3_rounds)
    result = {
        "machine": machine_info(device), "matmul_gflops": probe, "settings": settings,
        "flops_convention": F.CONVENTION, "memory_measure": PeakMemory(device).what,
        "load_average": {"start": load0, "end": load_average()}, "wall_seconds": time.time() - started,
        "passes_rerun_busy_machine": {name: g.discarded for name, g in gates.items()},
        "p1": p1, "p2": p2, "p3": p3, "runs": rows,
    }
    md = headline_markdown(result)
    paths = write_outputs(result, Path(args.out), "headline", md, f"{description}, {settings['llm_layers']} LLM layers, "
                          f"{settings['dtype']}, batch 1")
    print(_headline_lines(result))
    print("wrote " + ", ".join(str(p) for p in paths.values()) + f" in {result['wall_seconds']:.0f} s")
    if not p3["answers_equal_up_to_ties"]:
        raise AssertionError(f"P3: greedy answers differ between batch 1 and batch {p3['questions']} beyond "
                             f"numerical near-ties: {p3['answer_check']['mismatches']}")
    return result


def _headline_lines(r: dict) -> str:
    p1, p2, p3 = r["p1"], r["p2"], r["p3"]
    ov = p1["scoring_overhead"]
    return "\n".join([
        f"P1 [CLS] scoring overhead on the tower: {100 * ov['median']:+.2f}% (p10 {100 * ov['p10']:+.2f}%, "
        f"p90 {100 * ov['p90']:+.2f}%), row alone {1e3 * p1['cls_row_seconds']:.2f} ms "
        f"({100 * p1['cls_row_share']:.3f}%); goal <= 2%. Original FasterVLM tower: "
        f"{100 * p1['original_extra_vs_ours']['median']:+.1f}% time, "
        f"{p1['attention_map_bytes_original'] / 1e6:.0f} MB of maps per image "
        f"({p1['attention_map_bytes_original_fp32'] / 1e6:.0f} MB in fp32); ours keeps none.",
        f"P2 TTFT speedup K={p2['k_pruned']} vs {p2['k_full']}: {p2['ttft_speedup']['median']:.2f}x measured, "
        f"{p2['ttft_speedup_flops']:.2f}x FLOPs-predicted = {100 * p2['ttft_fraction_of_flops']:.1f}% (goal >= 95%); "
        f"prefill alone {p2['prefill_speedup']['median']:.2f}x vs {p2['prefill_speedup_flops']:.2f}x "
        f"= {100 * p2['prefill_fraction_of_flops']:.1f}%.",
        f"P3 questions/s batch {p3['questions']} vs 1: {p3['speedup']['median']:.2f}x "
        f"({p3['questions_per_s_batch8']:.3f} vs {p3['questions_per_s_batch1']:.3f} q/s; goal >= 3x), "
        f"answers identical {p3['answers_identical']}/{p3['questions']}, "
        f"other {len(p3['answer_check']['near_ties'])} diverge at near-ties "
        f"(<= {p3['answer_check']['tie_tolerance_ulps']:g} ulps), mismatches {len(p3['answer_check']['mismatches'])}; decode step {p3['decode_speedup']:.2f}x, "
        f"pre-decode {p3['speedup_limit_no_decode']:.2f}x.",
    ])


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model_path and args.arch:
        raise SystemExit("give either --model-path (real weights) or --arch (random weights), not both")
    # The model is built outside inference_mode: parameters created inside it are inference tensors
    # that report requires_grad=False, which sends the LM head down at::matmul's copying bmm path.
    if args.headline and args.efficiency:
        raise SystemExit("give --headline or --efficiency, not both")
    if (args.arch in FAMILY_ARCHS and args.random_weights) or _family_checkpoint(args.model_path):
        if args.headline or args.efficiency or args.baseline:
            raise SystemExit("a processor family's timed run is its own table: drop --headline, --efficiency and "
                             "--baseline")
        if args.visual_token_num:
            raise SystemExit("a processor family's timed run takes budgets as kept fractions of each image's tokens: "
                             "give --keep-fractions (e.g. 0.5,0.25,0.11) instead of --visual-token-num")
        from .family_bench import main_run

        return main_run(args)
    if args.arch in FAMILY_ARCHS:
        return run_family_flops(args)
    if is_video_arch(args.arch) and not args.efficiency:
        raise SystemExit(f"--arch {args.arch} is a video preset of --efficiency: add --efficiency")
    if args.efficiency:
        return run_efficiency_mode(args)
    return run_headline(args) if args.headline else run_sweep(args)
