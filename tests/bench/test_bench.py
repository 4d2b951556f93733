"""The benchmark end to end on the tiny model: outputs written, every stage present and positive.

No timing thresholds: only structure, sizes, FLOPs bookkeeping and token equalities are asserted.
"""

from __future__ import annotations

import json

import pytest
import torch

from llava.bench import flops as F
from llava.bench.cli import main
from llava.bench.measure import PeakMemory, summarize
from llava.bench.models import build_random_model, llava_config, make_batch, random_image_processor, tiny_tokenizer, with_llm_layers
from llava.bench.stages import STAGES, Clock, OriginalTower, SignalTimer, run_original, run_ours
from llava.model.tiny import build_tiny_model
from llava.pruning import PruningConfig, get_method


@pytest.fixture(scope="module")
def tiny_setup():
    torch.set_num_threads(2)
    tokenizer = tiny_tokenizer()
    model = build_tiny_model(len(tokenizer))
    batch = make_batch(tokenizer, random_image_processor(), model.config, 3, "cpu", torch.float32)
    return model, batch


def _files(out, stem):
    paths = [out / f"{stem}.{ext}" for ext in ("json", "md", "png")]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    return json.loads(paths[0].read_text())


def test_sweep_end_to_end(tmp_path):
    main(["--arch", "tiny", "--dtype", "float32", "--visual-token-num", "576,64", "--pruning-method", "fastervlm,random",
          "--batch-size", "1,2", "--baseline", "--repeats", "1", "--warmup", "0", "--max-new-tokens", "3",
          "--retries", "0", "--wait-quiet", "0", "--out", str(tmp_path)])
    result = _files(tmp_path, "bench")
    rows = {r["label"]: r for r in result["runs"]}
    assert len(rows) == 2 * 2 * 2 + 2
    for row in rows.values():
        s = row["seconds"]
        assert set(STAGES) | {"ttft", "e2e", "decode_per_token"} <= set(s)
        for stage in ("vision", "projector", "splice", "prefill", "decode", "ttft", "e2e"):
            assert s[stage]["median"] > 0, (row["label"], stage)
        assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"] > 0
        assert row["peak_memory_bytes"]["pass"] >= 0 and row["flops"]["e2e"] > 0
        assert len(row["tokens"]) == row["batch"] and len(row["tokens"][0]) == 3
    pruned = rows["fastervlm K=64 B=1"]
    assert all(pruned["seconds"][stage]["median"] > 0 for stage in STAGES)  # scoring and select too
    assert rows["fastervlm K=576 B=1"]["seconds"]["scoring"]["median"] == 0  # nothing scored when nothing is pruned
    assert pruned["visual_tokens"] == 64 and rows["fastervlm K=576 B=2"]["visual_tokens"] == 576
    assert pruned["ttft_speedup_flops"] > 1
    # The original FasterVLM path keeps the same patches, so it answers the same.
    original = rows["original FasterVLM K=64 B=1"]
    assert original["tokens"] == pruned["tokens"]
    assert original["attention_map_bytes"] == 4 * 4 * 577 * 577 * 4  # 4 layers x 4 heads x T^2 x fp32
    assert original["flops"]["vision"] > pruned["flops"]["vision"]
    md = (tmp_path / "bench.md").read_text()
    assert "original FasterVLM K=64 B=1" in md and "ttft ms" in md


def test_headline_on_tiny(tmp_path):
    result = main(["--headline", "--arch", "tiny", "--dtype", "float32", "--p1-rounds", "2", "--p2-rounds", "2",
                   "--p2-k", "576", "--p2-pruned-k", "64", "--p3-batch", "3", "--p3-new-tokens", "3", "--warmup", "0",
                   "--retries", "0", "--wait-quiet", "0", "--out", str(tmp_path)])
    saved = _files(tmp_path, "headline")
    assert saved["p3"]["answers_equal"] is True and saved["p3"]["answer_check"]["mismatches"] == []
    p1, p2, p3 = result["p1"], result["p2"], result["p3"]
    assert set(p1["variants"]) == {"ours_no_scoring", "ours_cls_scoring", "llava_full_tower", "original_fastervlm"}
    assert len(p1["scoring_overhead"]["values"]) == 2 and p1["cls_row_seconds"] > 0
    assert p1["attention_map_bytes_original"] == p1["attention_map_bytes_original_fp32"] == 4 * 4 * 577**2 * 4
    assert p2["ttft_speedup_flops"] > 1 and p2["ttft_fraction_of_flops"] > 0
    assert p3["questions"] == 3 and p3["llm_layers"] == 2 and p3["speedup"]["median"] > 0
    assert "P1" in (tmp_path / "headline.md").read_text()


def test_model_path_smoke(tiny_path, tmp_path):
    result = main(["--model-path", tiny_path, "--dtype", "float32", "--visual-token-num", "64", "--repeats", "1",
                   "--warmup", "0", "--max-new-tokens", "2", "--retries", "0", "--wait-quiet", "0", "--out", str(tmp_path)])
    assert result["runs"][0]["visual_tokens"] == 64
    _files(tmp_path, "bench")


@pytest.mark.parametrize("method", ["fastervlm", "vtc_cls", "visionzip", "divprune", "fastv"])
def test_greedy_loop_matches_generate(tiny_setup, method):
    model, batch = tiny_setup
    result = run_ours(model, batch, 64, get_method(method), {}, 5, Clock("cpu"))
    generated = model.generate(batch.input_ids, images=batch.images, attention_mask=batch.attention_mask,
                               pruning=PruningConfig(method, 64), max_new_tokens=5, do_sample=False)
    n = generated.shape[1]
    assert torch.equal(result.tokens[:, :n], generated)
    # `projected` is part of the selection step, `cls_feature` a slice: neither is timed as scoring.
    assert result.seconds["scoring"] > 0 if get_method(method).needs - {"keys", "projected", "cls_feature"} else True
    assert model.pruning == PruningConfig()  # the bench passes its settings; the model's default is untouched


def test_scoring_timer_recomputes_the_towers_own_signals(tiny_setup):
    model, batch = tiny_setup
    tower = model.get_vision_tower()
    needs = frozenset({"cls_attn", "cls_attn_layers", "keys"})
    timer = SignalTimer(tower, needs)
    with timer.capturing():
        signals = tower(batch.images, needs=needs)
    again = timer.signals()
    assert set(again) == needs
    for name in needs:
        assert torch.equal(again[name], getattr(signals, name)), name
    assert timer.time(Clock("cpu"), repeats=3) > 0 and SignalTimer(tower, frozenset()).time(Clock("cpu")) == 0


def test_splice_of_encoded_tokens_equals_the_splice_from_images(tiny_setup):
    model, batch = tiny_setup
    model.set_pruning(None, "fastervlm", {})
    from_images = model.prepare_multimodal_inputs(batch.input_ids, batch.images, batch.attention_mask, None, 64, "left")
    encoded = model.encode_images(batch.images, 64)
    spliced = model.prepare_multimodal_inputs(batch.input_ids, None, batch.attention_mask, None, None, "left",
                                              encoded=encoded)
    assert spliced.encoded is encoded and spliced.image_spans == from_images.image_spans
    for name in ("inputs_embeds", "attention_mask", "position_ids"):
        assert torch.equal(getattr(spliced, name), getattr(from_images, name)), name
    assert "encode_images" not in vars(model)  # nothing shadows the model's methods
    with pytest.raises(ValueError, match="2 encoded images"):
        model.prepare_multimodal_inputs(batch.input_ids, None, batch.attention_mask, encoded=model.encode_images(
            batch.images[:2], 64))


def test_fastv_runs_on_the_llm_loop_and_its_cache_shrinks(tiny_setup):
    model, batch = tiny_setup
    result = run_ours(model, batch, 64, get_method("fastv"), {"layer": 2}, 2, Clock("cpu"))
    full = run_ours(model, batch, None, get_method("fastv"), {"layer": 2}, 2, Clock("cpu"))
    model.set_pruning(None, "fastervlm", {})
    d = F.ModelDims.from_model(model)
    per_layer = lambda length: F.kv_cache_bytes(d, batch.size, length, 4) // d.layers  # noqa: E731
    assert full.kv_cache_bytes == d.layers * per_layer(result.length)  # no budget: the stock model
    # layers 0-1 hold every token; layers 2-3 the longest row minus its 576 - 64 dropped image tokens
    assert result.kv_cache_bytes == 2 * per_layer(result.length) + 2 * per_layer(result.length - 512)


def test_original_path_keeps_the_same_patches(tiny_setup):
    model, batch = tiny_setup
    one = batch.row(0)
    ours = run_ours(model, one, 64, get_method("fastervlm"), {}, 4, Clock("cpu"))
    original = run_original(model, OriginalTower(model.get_vision_tower()), one, 64, 4, Clock("cpu"))
    assert torch.equal(ours.tokens, original.tokens)
    with pytest.raises(ValueError, match="one image at a time"):
        run_original(model, OriginalTower(model.get_vision_tower()), batch, 64, 2, Clock("cpu"))


def test_original_tower_shares_weights(tiny_setup):
    model, _ = tiny_setup
    tower = model.get_vision_tower()
    original = OriginalTower(tower)
    assert original.clip.config._attn_implementation == "eager"
    ours = dict(tower.vision_tower.named_parameters())
    for name, p in original.clip.named_parameters():
        assert p.data_ptr() == ours[name].data_ptr(), name


def test_fewer_layers_share_weights(tiny_setup):
    model, batch = tiny_setup
    view = with_llm_layers(model, 2)
    assert len(view.get_model().layers) == 2 and view.config.num_hidden_layers == 2
    assert view.lm_head.weight.data_ptr() == model.lm_head.weight.data_ptr()
    assert view.get_model().layers[1] is model.get_model().layers[1]
    result = run_ours(view, batch, 64, get_method("fastervlm"), {}, 2, Clock("cpu"))
    assert result.kv_cache_bytes == F.kv_cache_bytes(F.ModelDims.from_model(view), 3, result.length, 4)
    with pytest.raises(ValueError, match="cannot keep"):
        with_llm_layers(model, 5)


def test_random_model_shapes():
    config = llava_config("llava-v1.5-7b", llm_layers=4)
    assert (config.hidden_size, config.num_attention_heads, config.intermediate_size, config.vocab_size) == (4096, 32, 11008, 32000)
    assert config.num_hidden_layers == 4 and config.mm_hidden_size == 1024
    config13 = llava_config("llava-v1.5-13b")
    assert (config13.hidden_size, config13.num_hidden_layers, config13.intermediate_size) == (5120, 40, 13824)
    model = build_random_model("tiny", vocab_size=1536, dtype=torch.bfloat16)
    assert not any(p.is_meta for p in model.parameters())
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert torch.all(model.get_model().norm.weight == 1) and float(model.lm_head.weight.detach().float().std()) == pytest.approx(0.2, rel=0.05)
    with pytest.raises(ValueError, match="unknown --arch"):
        llava_config("llava-v9")


def test_peak_memory_sees_a_large_allocation():
    probe = PeakMemory("cpu")
    probe.start()
    x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    probe.mark("alloc")
    del x
    assert probe.finish()["alloc"] >= 60 * 2**20


def test_gate_reruns_passes_taken_on_a_busy_machine():
    from llava.bench.sweep import Gate

    loads = iter([0.5, 0.4, 0.05, 0.9])
    gate = Gate(max_other_load=0.15, retries=3, wait_s=0)
    assert gate.run(lambda: next(loads), load_of=lambda x: x) == 0.05 and gate.discarded == 2
    capped = Gate(max_other_load=0.15, retries=1, wait_s=0)
    assert capped.run(lambda: 0.9, load_of=lambda x: x) == 0.9 and capped.discarded == 1
    assert Gate(retries=3, wait_s=0).run(lambda: None, load_of=lambda x: x) is None  # no /proc/stat: keep the pass


def test_summarize():
    s = summarize([3.0, 1.0, 2.0, 4.0, 5.0])
    assert (s["median"], s["n"]) == (3.0, 5) and s["p10"] == pytest.approx(1.4) and s["p90"] == pytest.approx(4.6)
    assert summarize([])["median"] is None


def test_random_weights_needs_confirmation(tmp_path):
    with pytest.raises(SystemExit, match="--random-weights"):
        main(["--arch", "llava-v1.5-7b", "--out", str(tmp_path)])


def test_cli_builds_the_model_outside_inference_mode():
    # Inference tensors report requires_grad=False; frozen LM-head weights send the prefill's
    # [B, 1, H] slice down at::matmul's bmm path, which copies the transposed weight on every call.
    from llava.bench.cli import _setup, build_parser

    args = build_parser().parse_args(["--arch", "tiny", "--dtype", "float32"])
    model = _setup(args)[1]
    assert model.lm_head.weight.requires_grad and not model.lm_head.weight.is_inference()
    assert not any(p.requires_grad for p in model.get_vision_tower().parameters())  # as loaded checkpoints are
