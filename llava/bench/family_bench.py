"""Timed bench of the processor families (LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL): prefill time, KV bytes and
FLOPs per method and budget, side by side in one run.

One synthetic image (`synthetic_image`, a fixed colour pattern of `--image-size`, default 672 x 672) and
one question go through the checkpoint's own processor and chat template (`llava.model.inputs_builder`).
Each configuration is one method at one kept fraction f of the image's N_i tokens
(`PruningConfig(keep_ratio=f)`, so K = round(f N_i) is resolved by the config, per image), and one pass is:

    processor outputs --model.prepare_multimodal_inputs(pruning=...)-->      "vision" (tower + signals +
                                                                              selection + projector/merger + splice)
    spliced batch --the family's LLM loop .prefill (stock M-RoPE / causal
                   LM with its KV cache, or LLMLoop when FastV drops tokens)-->  "llm"
"prefill" = vision + llm (the time to the first token's logits). The KV-cache bytes are read from the
cache's tensors after the prefill. The loops are the ones each family's `generate` runs (`FAMILY_STEPS`).

FLOPs (`llava.bench.family_flops`, on the dimensions read back from the checkpoint's config.json): the
vision tower, the mean_attn scoring when pre-LLM pruning runs, the projector/merger on the rows it
really runs on, and the LLM prefill with every layer at the length it ran on (FastV's drops from its
dropper's report, plus its scoring row). Every row checks that the FLOPs model's token counts (N_i, K
and the prompt length) equal the ones the model reports, and raises otherwise.

Rounds: after `warmup` passes per configuration, `repeats` rounds run every configuration once in an
order rotated by the round; ratios against the unpruned row pair passes of the same round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from llava.pruning import PruningConfig, get_method
from llava.pruning.accounting import pruning_stages, tokens_per_layer

from . import family_flops as FF
from . import flops as F
from .measure import Clock, OtherLoad, summarize

DEFAULT_FRACTIONS = (0.5, 0.25, 0.11)
DEFAULT_METHODS = ("fastervlm", "fastv")
DEFAULT_IMAGE = (672, 672)
QUESTION = "Describe the image in one sentence."


def synthetic_image(size_hw: tuple[int, int]):
    """A deterministic RGB image of (height, width): colour ramps with a checker pattern (no files needed)."""
    from PIL import Image

    h, w = size_hw
    y = torch.arange(h)[:, None].expand(h, w)
    x = torch.arange(w)[None, :].expand(h, w)
    checker = ((x // 48 + y // 48) % 2) * 60
    rgb = torch.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), 255 - checker - 80], dim=-1)
    return Image.fromarray(rgb.clamp(0, 255).to(torch.uint8).numpy(), "RGB")


# ---- per family: the public pieces of one pass ------------------------------------------------------
@dataclass(frozen=True)
class FamilySteps:
    """How a family's model splices a batch and which loop runs its prefill (what its `generate` does).

    prepare(model, kw, cfg) -> (mm, prefill keywords); loop(model, mm, cfg, extra) -> an object with
    `prefill(embeds, mask, positions)` and `cache` (and `dropper` when it drops tokens); in_llm: whether
    in-LLM methods (FastV) run on the family.
    """

    prepare: Callable
    loop: Callable
    in_llm: bool


def _prepare_qwen25(model, kw, cfg):
    return model.prepare_multimodal_inputs(kw["inputs"], kw.get("attention_mask"), kw["images"], kw["image_grid_thw"],
                                           pruning=cfg), {}


def _prepare_qwen3(model, kw, cfg):
    return model.prepare_multimodal_inputs(kw["inputs"], kw.get("attention_mask"), kw["images"], kw["image_grid_thw"],
                                           pruning=cfg)


def _prepare_onevision(model, kw, cfg):
    from llava.model.llava_arch import FROM_PRUNING

    return model.prepare_multimodal_inputs(kw["inputs"], kw["images"], kw.get("attention_mask"), None, FROM_PRUNING,
                                           "left", image_sizes=kw["image_sizes"], pruning=cfg), {}


def _mrope_loop(model, mm, cfg, extra):
    from llava.model import qwen_layout
    from llava.model.llm_loop import LLMLoop

    pruner = model.in_llm_pruner(mm, cfg) if hasattr(model, "in_llm_pruner") else None
    if pruner is not None:
        return LLMLoop(model.language_model, model.lm_head, pruner)
    return qwen_layout.MRopeLoop(model.language_model, model.lm_head, prefill_kwargs=extra)


class _StockLoop:
    """LlavaForPruning's unpruned prefill (what `generate` runs through the stock LLM), with its cache."""

    dropper = None

    def __init__(self, model, mm, cfg) -> None:
        from .stages import _Decoder

        self.decoder = _Decoder(model, mm, cfg)
        self.cache = self.decoder.cache
        self.mm = mm

    def prefill(self, embeds, mask, positions):
        return self.decoder.prefill(self.mm)


def _onevision_loop(model, mm, cfg, extra):
    from llava.model.llm_loop import LLMLoop

    pruner = model.in_llm_pruner(mm, cfg)
    if pruner is not None:
        return LLMLoop(model.get_model(), model.lm_head, pruner)
    return _StockLoop(model, mm, cfg)


FAMILY_STEPS: dict[str, FamilySteps] = {
    "qwen2_5_vl": FamilySteps(_prepare_qwen25, _mrope_loop, in_llm=True),
    "qwen3_vl": FamilySteps(_prepare_qwen3, _mrope_loop, in_llm=False),
    "llava_onevision": FamilySteps(_prepare_onevision, _onevision_loop, in_llm=True),
}


def get_steps(model_type: str) -> FamilySteps:
    try:
        return FAMILY_STEPS[model_type]
    except KeyError:
        raise ValueError(f"model type {model_type!r} has no timed family bench; families: "
                         f"{', '.join(FAMILY_STEPS)}") from None


def family_inputs(processor, model_type: str, image, device, dtype, question: str = QUESTION) -> dict:
    """`model.generate`-style keywords for one question about `image`, from the checkpoint's processor."""
    from llava.model.families import family_of
    from llava.model.inputs_builder import ProcessorInputs, get_inputs_builder

    family = family_of({"model_type": model_type}, "").name
    builder = get_inputs_builder(family) or ProcessorInputs()
    encoded = builder.encode(processor, [builder.prompt(processor, question, 1)], [[image]])
    return builder.generate_kwargs(encoded, device, dtype)


# ---- one pass -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FamilyConfig:
    """One row: `method` at kept fraction `fraction` (None: unpruned) with `args`."""

    method: str | None
    fraction: float | None
    args: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        return "none" if self.method is None else f"{self.method} f={self.fraction:g}"

    def pruning(self) -> PruningConfig:
        if self.method is None:
            return PruningConfig()
        return PruningConfig(self.method, keep_ratio=self.fraction, method_args=dict(self.args))


@torch.no_grad()
def run_pass(model, steps: FamilySteps, kw: dict, cfg: FamilyConfig, clock: Clock) -> dict:
    """One pass: seconds of vision (prepare) and llm (prefill), what the LLM ran on, the KV bytes."""
    from .stages import cache_bytes

    pruning = cfg.pruning()
    load = OtherLoad().start()
    t0 = clock.now()
    mm, extra = steps.prepare(model, kw, pruning)
    t1 = clock.now()
    loop = steps.loop(model, mm, pruning, extra)
    t2 = clock.now()
    logits = loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
    token = logits.argmax(dim=-1)
    t3 = clock.now()
    enc = mm.encoded
    facts = {"row_lengths": [int(x) for x in mm.attention_mask.sum(dim=1).tolist()],
             "visual_tokens": [int(n) for n in enc.token_counts], "unpruned": [int(n) for n in enc.unpruned_counts],
             "budgets": list(enc.budgets), "length": int(mm.inputs_embeds.shape[1])}
    dropper = getattr(loop, "dropper", None)
    if dropper is not None:
        facts.update(in_llm=dropper.report(), drop_layers=list(dropper.drop_layers),
                     probe_layers=list(dropper.probe_layers), q_rows=dropper.q_rows, kv_lengths=loop.kv_lengths())
    return {"vision": t1 - t0, "llm": t3 - t2, "prefill": (t1 - t0) + (t3 - t2), "facts": facts,
            "kv_bytes": cache_bytes(loop.cache), "token": int(token[0]), "other_load": load.stop()}


def layer_lengths(facts: dict, layers: int) -> list[int]:
    """Positions each LLM layer ran on (one image, one row): the prompt minus the tokens dropped before it."""
    stages = pruning_stages(facts.get("in_llm"), 1)[0]
    n, length = facts["visual_tokens"][0], facts["row_lengths"][0]
    return [length - (n - kept) for kept in tokens_per_layer(n, stages, layers)]


def row_flops(arch: FF.FamilyArch, size_hw, cfg: FamilyConfig, facts: dict) -> dict:
    """FLOPs per stage of one pass, from the FLOPs model at the K the model resolved; checks its token counts."""
    pre = cfg.method is not None and get_method(cfg.method).stage == "pre_llm"
    n, entering, length = facts["unpruned"][0], facts["visual_tokens"][0], facts["length"]
    k = facts["budgets"][0] if pre else None
    text = length - entering
    out = FF.family_pipeline_flops(arch, size_hw, k, text_tokens=text, new_tokens=1)
    if (out["visual_tokens_unpruned"], out["visual_tokens"], out["prompt_length"]) != (n, entering, length):
        raise AssertionError(f"{arch.name} {cfg.label}: the FLOPs model's tokens (N={out['visual_tokens_unpruned']}, "
                             f"entering={out['visual_tokens']}, length={out['prompt_length']}) differ from the model's "
                             f"(N={n}, entering={entering}, length={length})")
    flops = dict(out["flops"])
    lengths = layer_lengths(facts, arch.llm.layers)
    flops["prefill"] = F.prefill_flops_layers(arch.llm, 1, lengths)
    if "in_llm" in facts:
        flops["prefill"] += F.in_llm_scoring_flops(arch.llm, 1, lengths, facts["probe_layers"], facts["drop_layers"],
                                                   facts["q_rows"])
    flops["ttft"] = sum(flops[s] for s in ("vision", "scoring", "select", "projector", "splice", "prefill"))
    flops.pop("decode", None)
    flops.pop("e2e", None)
    return {"flops": flops, "layer_lengths": lengths, "resized": out["resized"], "patches": out["patches"]}


def plan(methods, fractions, steps: FamilySteps, num_layers: int, overrides: dict | None = None) -> tuple[list, list]:
    """(configurations, skipped notes): 'none', then every method at every fraction it can run at."""
    overrides = overrides or {}
    configs, skipped = [FamilyConfig(None, None)], []
    for name in methods:
        method = get_method(name)
        if method.stage == "in_llm" and not steps.in_llm:
            skipped.append(f"{name}: in-LLM methods do not run on this family")
            continue
        args = dict(overrides.get(name, {}))
        if name == "fastv" and "layer" not in args:
            args["layer"] = min(2, num_layers - 1)  # FastV's layer 2, or the last one a shallow LLM allows
            if args["layer"] < 1:
                skipped.append(f"{name}: needs at least 2 LLM layers")
                continue
        configs += [FamilyConfig(name, f, tuple(sorted(args.items()))) for f in fractions]
    return configs, skipped


def run_family_bench(model, model_type: str, arch: FF.FamilyArch, kw: dict, size_hw, *, methods=DEFAULT_METHODS,
                     fractions=DEFAULT_FRACTIONS, overrides: dict | None = None, warmup: int = 1, repeats: int = 2,
                     device="cpu", clock: str = "wall", gate=None, log=print) -> dict:
    """Every configuration side by side; returns {'rows': [...], 'skipped': [...]} with ratios to 'none'.

    gate: a `llava.bench.sweep.Gate` that re-runs a timed pass disturbed by other processes (default: none);
    statistics and ratios then use the undisturbed passes (rounds where both passes were undisturbed)."""
    from .sweep import Gate

    gate = gate or Gate(retries=0)
    steps = get_steps(model_type)
    timer = Clock(device, clock)
    configs, skipped = plan(methods, fractions, steps, arch.llm.layers, overrides)
    passes: dict[FamilyConfig, list[dict]] = {c: [] for c in configs}
    for cfg in configs:
        for _ in range(warmup):
            p = run_pass(model, steps, kw, cfg, timer)
            log(f"  warm-up {cfg.label}: vision {p['vision']:.2f} s, llm {p['llm']:.2f} s")
    for r in range(max(repeats, 1)):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for cfg in order:
            passes[cfg].append(gate.run(lambda: run_pass(model, steps, kw, cfg, timer), load_of=lambda p: p["other_load"]))
        log(f"  round {r + 1}/{repeats}: " + ", ".join(f"{c.label} {passes[c][-1]['prefill']:.2f} s" for c in configs))
    element = model.dtype.itemsize
    rows = []
    for cfg in configs:
        last = passes[cfg][-1]
        facts = last["facts"]
        fl = row_flops(arch, size_hw, cfg, facts)
        rows.append({
            "label": cfg.label, "method": cfg.method or "none", "fraction": cfg.fraction,
            "args": {k: v for k, v in cfg.args}, "visual_tokens_unpruned": facts["unpruned"][0],
            "visual_tokens": facts["visual_tokens"][0], "budget": facts["budgets"][0],
            "prompt_length": facts["length"], "layer_lengths": fl["layer_lengths"],
            "in_llm": facts.get("in_llm"), "kv_lengths": facts.get("kv_lengths"),
            "seconds": {s: summarize([p[s] for p in passes[cfg]], [gate.clean(p["other_load"]) for p in passes[cfg]])
                        for s in ("vision", "llm", "prefill")},
            "kv_cache_bytes": last["kv_bytes"],
            "kv_cache_bytes_analytic": F.kv_cache_bytes_layers(arch.llm, 1, fl["layer_lengths"], element),
            "flops": fl["flops"], "resized": fl["resized"], "patches": fl["patches"],
            "other_load": [p["other_load"] for p in passes[cfg]], "_passes": passes[cfg],
        })
    add_ratios(rows, gate)
    for row in rows:
        row.pop("_passes")
    return {"rows": rows, "skipped": skipped, "passes_rerun_busy_machine": gate.discarded}


def add_ratios(rows: list[dict], gate=None) -> None:
    """Per row, pruned / unpruned ratios: prefill, vision and llm time (median of the per-round ratios, over the
    rounds where both passes were undisturbed when there are such), KV bytes, FLOPs."""
    ref = rows[0]
    for row in rows:
        pairs = list(zip(row["_passes"], ref["_passes"]))
        keep = [gate is None or (gate.clean(p["other_load"]) and gate.clean(q["other_load"])) for p, q in pairs]
        for s in ("prefill", "vision", "llm"):
            row[f"{s}_time_ratio"] = summarize([p[s] / q[s] for p, q in pairs], keep)["median"]
        row["kv_ratio"] = row["kv_cache_bytes"] / ref["kv_cache_bytes"]
        row["ttft_flops_ratio"] = row["flops"]["ttft"] / ref["flops"]["ttft"]
        row["llm_flops_ratio"] = row["flops"]["prefill"] / ref["flops"]["prefill"]


def family_markdown(result: dict) -> str:
    """The side-by-side table of one run."""
    s = result["settings"]
    lines = [f"{s['arch']} ({s['model']}), {s['llm_layers']} LLM layers, {s['dtype']}, image {s['image_size']} -> "
             f"{result['rows'][0]['resized']}, N_i = {result['rows'][0]['visual_tokens_unpruned']}, clock {s['clock']}",
             "",
             "| config | K | LLM length | vision s | LLM s | prefill s | prefill ratio | LLM ratio | KV MB | KV ratio | "
             "TTFT TFLOPs | TTFT FLOPs ratio | LLM FLOPs ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        sec = r["seconds"]
        lines.append(
            f"| {r['label']} | {r['visual_tokens'] if r['method'] != 'fastv' else r['budget']} | "
            f"{r['layer_lengths'][0]}→{r['layer_lengths'][-1]} | {sec['vision']['median']:.2f} | {sec['llm']['median']:.2f} | "
            f"{sec['prefill']['median']:.2f} | {r['prefill_time_ratio']:.3f} | {r['llm_time_ratio']:.3f} | "
            f"{r['kv_cache_bytes'] / 1e6:.1f} | {r['kv_ratio']:.3f} | {r['flops']['ttft'] / 1e12:.3f} | "
            f"{r['ttft_flops_ratio']:.3f} | {r['llm_flops_ratio']:.3f} |")
    for note in result.get("skipped", []):
        lines.append(f"\nskipped: {note}")
    return "\n".join(lines) + "\n"


def main_run(args, log=print) -> dict:
    """The CLI's timed family run: build (or load) the checkpoint, time every configuration, write JSON + Markdown."""
    import json
    import tempfile
    from pathlib import Path

    from llava.model.builder import load_pretrained_model, read_config

    from .efficiency import parse_method_overrides
    from .family_flops import _size
    from .family_models import family_arch_from_config, save_random_checkpoint
    from .measure import machine_info
    from .sweep import Gate

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
        args.dtype or ("float16" if device == "cuda" else "bfloat16")]
    size = _size(args.image_size) if args.image_size else DEFAULT_IMAGE
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-family-") as tmp:
        if args.model_path:
            if args.llm_layers is not None:
                raise SystemExit(f"{args.model_path}: --llm-layers cuts the random-weight --arch presets only; a "
                                 "family checkpoint is timed at its full depth")
            folder, name, what = args.model_path, Path(args.model_path).name, args.model_path
        else:
            folder, name, what = Path(tmp) / args.arch, args.arch, "random weights"
            save_random_checkpoint(args.arch, folder, args.llm_layers or 2, dtype, args.seed)
        raw = read_config(str(folder))
        _, model, processor, _ = load_pretrained_model(str(folder), device=device, torch_dtype=dtype)
        arch = family_arch_from_config(name, raw, getattr(processor, "image_processor", processor))
        log(f"model: {name} ({what}), {arch.llm.layers} LLM layers, {dtype}; ready in {time.time() - started:.0f} s")
        kw = family_inputs(processor, raw["model_type"], synthetic_image(size), device, dtype)
        methods = [m.strip() for m in (args.pruning_method or ",".join(DEFAULT_METHODS)).split(",") if m.strip()]
        fractions = args.keep_fractions or list(DEFAULT_FRACTIONS)
        with torch.inference_mode():
            out = run_family_bench(model, raw["model_type"], arch, kw, size, methods=methods, fractions=fractions,
                                   overrides=parse_method_overrides(args.method_args), warmup=args.warmup,
                                   repeats=args.repeats, device=device, clock=args.clock,
                                   gate=Gate(args.max_other_load, args.retries, min(args.wait_quiet, 30)), log=log)
    result = {"machine": machine_info(device), "settings": {
        "arch": name, "model": what, "family": raw["model_type"], "llm_layers": arch.llm.layers,
        "dtype": str(dtype).replace("torch.", ""), "image_size": f"{size[0]}x{size[1]}", "question": QUESTION,
        "methods": methods, "keep_fractions": fractions, "warmup": args.warmup, "repeats": args.repeats,
        "clock": args.clock}, "flops_convention": F.CONVENTION, "wall_seconds": time.time() - started, **out}
    md = family_markdown(result)
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    (target / f"family_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (target / f"family_{name}.md").write_text(md)
    log(md)
    return result
