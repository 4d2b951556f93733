"""`python -m llava.bench --efficiency`: in-LLM FLOPs per layer against FlopCounterMode, the plan of
rows from the registry, the per-layer lengths from the droppers' reports, and the run end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llava.bench import flops as F
from llava.bench.efficiency import EffConfig, depth_args, layer_lengths, parse_method_overrides, plan
from llava.bench.models import make_batch, random_image_processor, tiny_tokenizer
from llava.bench.stages import _Decoder, llm_facts
from llava.model.tiny import build_tiny_model
from llava.pruning import PruningConfig, get_method, list_methods


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    model = build_tiny_model(len(tokenizer))
    batch = make_batch(tokenizer, random_image_processor(), model.config, 2, "cpu", torch.float32)
    return model, batch, F.ModelDims.from_model(model)


def _prefill_counted(model, batch, cfg):
    """(FlopCounterMode's FLOPs of one in-LLM prefill on SDPA's math backend, the bench's llm_facts)."""
    with torch.no_grad():
        mm = model.prepare_multimodal_inputs(batch.input_ids, batch.images, batch.attention_mask,
                                             padding_side="left", pruning=cfg)
        decoder = _Decoder(model, mm, cfg)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            decoder.prefill(mm)
    return counter.get_total_flops(), llm_facts(decoder, mm)


@pytest.mark.parametrize("method, k, args", [("fastv", 64, {"layer": 2}), ("pdrop", None, {"layers": (1, 2, 3)}),
                                             ("dart", 128, {"layer": 2})])
def test_in_llm_prefill_flops_per_layer_match_the_counter(setup, method, k, args):
    model, batch, d = setup
    batch = batch if method == "fastv" else batch.row(0)  # a padded batch of 2 once, single rows otherwise (time)
    b = batch.size
    counted, facts = _prefill_counted(model, batch, PruningConfig(method, k, method_args=args))
    lengths = layer_lengths(facts, d.layers)
    assert lengths == facts["kv_lengths"]  # the report's accounting is what the loop cached
    assert lengths[0] > lengths[-1]  # the later layers really run shorter
    scoring = F.in_llm_scoring_flops(d, b, lengths, facts["probe_layers"], facts["drop_layers"], facts["q_rows"])
    assert counted == F.prefill_flops_layers(d, b, lengths) + scoring
    if method == "dart":
        assert scoring == 0  # keys only: nothing beyond the layers' own products
    else:
        assert scoring > 0


def test_layer_lengths_from_reports(setup):
    one = {"row_lengths": [50, 40], "visual_tokens": [20, 20]}
    assert layer_lengths(one, 3) == [50, 50, 50]
    fastv = {**one, "in_llm": {"layer": 1, "kept_after_layer": [5, 8]}}
    assert layer_lengths(fastv, 3) == [50, 35, 35]  # max(50 - 15, 40 - 12)
    staged = {**one, "in_llm": {"layer": 1, "kept_after_layer": [10, 10], "layers": [1, 2],
                                "kept_per_stage": [[10, 5], [10, 5]]}}
    assert layer_lengths(staged, 3) == [50, 40, 35]
    d = setup[2]
    assert F.prefill_flops_layers(d, 2, 70) == F.prefill_flops(d, 2, 70)
    assert F.decode_flops_layers(d, 2, [70] * d.layers, 4) == F.decode_flops(d, 2, 70, 4)
    assert F.kv_cache_bytes_layers(d, 2, 70, 4) == F.kv_cache_bytes(d, 2, 70, 4)


def test_plan_comes_from_the_registry():
    rows = plan(["none", "fastervlm", "fastv", "pdrop"], [192, 64], 8, 576)
    assert [r.label for r in rows] == ["none", "fastervlm K=192", "fastervlm K=64", "fastv K=192", "fastv K=64",
                                       "pdrop (layers=2:4:6)"]
    assert rows[-1].scheduled and rows[-1].k == 576
    assert depth_args("pdrop", 32) == {} and depth_args("pdrop", 4) == {"layers": (1, 2, 3)}
    assert depth_args("fastv", 8) == {}
    over = plan(["pdrop"], [64], 8, 576, parse_method_overrides(["pdrop:layers=3:5,ratios=0.5:0.25"]))
    assert over[0].args == (("layers", (3, 5)), ("ratios", (0.5, 0.25)))
    with pytest.raises(ValueError, match="METHOD:key=value"):
        parse_method_overrides(["layers=2"])
    # every registered method gets rows (budgeted or scheduled), without a hard-coded list
    every = plan(list_methods(), [64], 8, 576)
    assert {r.method for r in every} == set(list_methods())
    for r in every:
        assert r.scheduled == (get_method(r.method).stage == "in_llm"
                               and not getattr(get_method(r.method).llm_pruner, "needs_budget", True))
    assert EffConfig("none", None).registered == "fastervlm"


def test_efficiency_run_end_to_end(tmp_path):
    from llava.bench.cli import main

    out = tmp_path / "eff"
    result = main(["--efficiency", "--arch", "tiny", "--dtype", "float32", "--pruning-method", "none,fastervlm,fastv,pdrop",
                   "--clock", "cpu", "--fastv-rounds", "2",
                   "--visual-token-num", "64", "--repeats", "1", "--max-new-tokens", "2", "--wait-quiet", "0",
                   "--retries", "0", "--threads", "1", "--out", str(out)])
    for ext in ("json", "md", "png"):
        assert (out / f"efficiency.{ext}").stat().st_size > 0
    rows = {r["label"]: r for r in result["runs"]}
    assert list(rows) == ["none", "fastervlm K=64", "fastv K=64", "pdrop (layers=1:2:3)"]
    none, pre, fastv, pdrop = rows.values()
    for r in rows.values():
        assert r["kv_cache_bytes"] == r["kv_cache_bytes_analytic"] > 0
        assert r["seconds"]["prefill"]["median"] > 0 and r["seconds"]["decode_per_token"]["median"] > 0
        assert r["peak_memory_bytes"]["pass"] >= 0
    assert none["layer_averaged_visual_tokens"] == 576 and pre["layer_averaged_visual_tokens"] == 64
    assert fastv["layer_averaged_visual_tokens"] == (2 * 576 + 2 * 64) / 4 and fastv["prune_layers"] == [[2]]
    assert fastv["layer_lengths"] == fastv["kv_lengths"] and pdrop["layer_lengths"] == pdrop["kv_lengths"]
    assert none["flops"]["prefill"] > fastv["flops"]["prefill"] > pre["flops"]["prefill"]
    assert fastv["kv_cache_bytes"] < none["kv_cache_bytes"]
    assert fastv["prefill_speedup_flops"] == pytest.approx(none["flops"]["prefill"] / fastv["flops"]["prefill"])
    check = result["fastv_check"]
    assert set(check["per_budget"]) == set(check["in_table"]) == {64} and check["goal"] == 0.9
    pairs = check["pairs"]
    assert check["source"] == "prefill pairs" and pairs["rounds"] == 2
    assert pairs["layer_lengths"]["fastv K=64"] == fastv["layer_lengths"]  # the same prefill as the table's
    assert pairs["flops"]["fastv K=64"] == fastv["flops"]["prefill"] and pairs["flops"]["none"] == none["flops"]["prefill"]
    assert len(pairs["seconds"]["none"]["values"]) == 2
    assert check["per_budget"][64]["predicted"] == pytest.approx(fastv["prefill_speedup_flops"])
    md = (out / "efficiency.md").read_text()
    assert "| fastv K=64 | 64 | 576 | L2: 64 | 320.0 |" in md and "FastV LLM prefill speedup" in md
    settings = json.loads((out / "efficiency.json").read_text())["settings"]
    assert settings["clock"] == "cpu" and settings["methods"] == ["none", "fastervlm", "fastv", "pdrop"]


def test_cpu_clock_counts_process_time():
    import time

    from llava.bench.measure import Clock

    cpu, wall = Clock("cpu", "cpu"), Clock("cpu")
    c0, w0 = cpu.now(), wall.now()
    time.sleep(0.2)  # sleeping costs no CPU time
    assert wall.now() - w0 >= 0.2 and cpu.now() - c0 < 0.1
    with pytest.raises(ValueError, match="clock must be one of"):
        Clock("cpu", "gpu")


def test_a_refused_configuration_is_reported_not_run(setup, tmp_path):
    from llava.bench.efficiency import run_efficiency

    model, batch, _ = setup
    bad = EffConfig("fastv", 64, (("layer", 9),))  # beyond the tiny LLM's 4 layers
    rows = run_efficiency(model, batch.row(0), [EffConfig("none", None), bad], new_tokens=2, warmup=1, repeats=1,
                          device="cpu", log=lambda _m: None)
    assert "skipped" not in rows[0] and "fastv layer must be in [1, 3]" in rows[1]["skipped"]
