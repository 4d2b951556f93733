"""The timed processor-family bench (llava.bench.family_bench / family_models): presets equal the released
configs, small-width checkpoints of each family are built through the same path and loaded by the family
loaders, and a run reports token counts, KV bytes and FLOPs that agree with the model and the FLOPs model."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llava.bench import family_flops as FF
from llava.bench import family_models as FM

SIZE = (224, 336)
FRACTIONS = (0.5, 0.25)

# Small widths, the families' real geometry (patch, merge, windows, DeepStack, SigLIP 384/14, anyres_max_9).
_ROPE = {"rope_type": "default", "rope_theta": 1000000.0}
SMALL = {
    "qwen2_5_vl": dict(
        model_type="qwen2_5_vl", tie_word_embeddings=False,
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=512, rope_parameters={**_ROPE, "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[1, 3])),
    "qwen3_vl": dict(
        model_type="qwen3_vl", tie_word_embeddings=False,
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=16, vocab_size=512,
                         rope_parameters={**_ROPE, "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        vision_config=dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                           deepstack_visual_indexes=[0, 1])),
    "llava_onevision": dict(
        model_type="llava_onevision", tie_word_embeddings=False, vision_feature_layer=-1,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9",
        image_grid_pinpoints=FM.RELEASED["onevision-qwen2-7b"]["image_grid_pinpoints"],
        text_config=dict(model_type="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=512, rope_parameters=_ROPE),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=384, patch_size=14, vision_use_head=False)),
}


# ---- presets ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FM.RELEASED))
def test_presets_are_the_released_configs_and_the_flops_presets(name):
    """transformers' config class takes every encoded released field as given, and reading that config back
    gives exactly the FLOPs preset of `llava.bench.family_flops` (so FLOPs and timed runs share dimensions)."""
    from transformers import AutoConfig

    raw = FM.preset_config(name)
    config = AutoConfig.for_model(**raw)
    for part in ("text_config", "vision_config"):
        sub = getattr(config, part)
        for key, value in FM.RELEASED[name][part].items():
            got = getattr(sub, key)
            if isinstance(value, dict):
                assert {k: got[k] for k in value} == value, (name, part, key)
            else:
                assert got == value, (name, part, key)
    assert FM.family_arch_from_config(name, raw) == FF.FAMILY_ARCHS[name]
    cut = FM.preset_config(name, llm_layers=2)
    assert cut["text_config"]["num_hidden_layers"] == 2 and FM.RELEASED[name]["text_config"]["num_hidden_layers"] > 2
    assert FM.family_arch_from_config(name, cut).llm == FF.with_llm(FF.FAMILY_ARCHS[name], layers=2).llm


def test_released_dims_spelled_out():
    """The numbers the presets encode, written once more by hand from the model cards' config.json."""
    q25, q3, ov = (FM.RELEASED[n] for n in ("qwen2.5-vl-7b", "qwen3-vl-8b", "onevision-qwen2-7b"))
    assert (q25["vision_config"]["depth"], q25["vision_config"]["hidden_size"], q25["text_config"]["hidden_size"],
            q25["text_config"]["vocab_size"], q25["vision_config"]["fullatt_block_indexes"]) == (32, 1280, 3584, 152064,
                                                                                                [7, 15, 23, 31])
    assert (q3["vision_config"]["depth"], q3["vision_config"]["patch_size"], q3["text_config"]["num_hidden_layers"],
            q3["text_config"]["num_key_value_heads"], q3["vision_config"]["deepstack_visual_indexes"]) == (27, 16, 36, 8,
                                                                                                         [8, 16, 24])
    assert (ov["vision_config"]["num_hidden_layers"], ov["vision_config"]["hidden_size"], ov["text_config"]["vocab_size"],
            len(ov["image_grid_pinpoints"])) == (26, 1152, 152128, 36)


def test_bad_presets_are_refused():
    with pytest.raises(ValueError, match="unknown family --arch 'qwen9'"):
        FM.preset_config("qwen9")
    with pytest.raises(ValueError, match=r"--llm-layers must be in \[1, 28\]"):
        FM.preset_config("qwen2.5-vl-7b", llm_layers=40)


# ---- small checkpoints, built and loaded as the presets are ---------------------------------------------
@pytest.fixture(scope="module", params=sorted(SMALL))
def small(request, tmp_path_factory):
    """(model_type, folder, run result) of one family: built with save_random_checkpoint, timed through the CLI."""
    from llava.bench.cli import main

    kind = request.param
    folder = FM.save_random_checkpoint(f"small-{kind}", tmp_path_factory.mktemp(kind) / "ckpt", dtype=torch.float32,
                                       fields=SMALL[kind])
    out = tmp_path_factory.mktemp(kind + "-out")
    result = main(["--model-path", str(folder), "--dtype", "float32", "--image-size", "x".join(map(str, SIZE)),
                   "--keep-fractions", ",".join(map(str, FRACTIONS)), "--warmup", "0", "--repeats", "1",
                   "--retries", "0", "--out", str(out)])
    return kind, folder, result, out


def _expected_n(kind, folder) -> tuple[int, object]:
    """N_i counted from the processor's own outputs (image pads it expands), and the processor."""
    from llava.bench.family_bench import family_inputs, synthetic_image
    from llava.vision_compat import load_processor

    processor = load_processor(str(folder))
    kw = family_inputs(processor, kind, synthetic_image(SIZE), "cpu", torch.float32)
    pad = json.loads((folder / "config.json").read_text())
    token = pad.get("image_token_id", pad.get("image_token_index"))
    return int((kw["inputs"] == token).sum()), processor


def test_small_run_token_counts_kv_and_flops(small):
    from llava.bench.flops import kv_cache_bytes_layers

    kind, folder, result, out = small
    n, processor = _expected_n(kind, folder)
    rows = {r["label"]: r for r in result["rows"]}
    none = rows["none"]
    assert none["visual_tokens_unpruned"] == none["visual_tokens"] == n
    length = none["prompt_length"]
    arch = FM.family_arch_from_config(folder.name, json.loads((folder / "config.json").read_text()),
                                      processor.image_processor)
    expected_labels = ["none"] + [f"fastervlm f={f:g}" for f in FRACTIONS]
    if kind != "qwen3_vl":
        expected_labels += [f"fastv f={f:g}" for f in FRACTIONS]
    else:
        assert result["skipped"] == ["fastv: in-LLM methods do not run on this family"]
    assert list(rows) == expected_labels
    text = length - n
    for f in FRACTIONS:
        k = max(1, round(f * n))
        pre = rows[f"fastervlm f={f:g}"]
        assert (pre["budget"], pre["visual_tokens"], pre["prompt_length"]) == (k, k, text + k)
        assert pre["layer_lengths"] == [text + k] * arch.llm.layers
        flops = FF.family_pipeline_flops(arch, SIZE, k, text_tokens=text, new_tokens=1)["flops"]
        assert pre["flops"] == {s: v for s, v in flops.items() if s not in ("decode", "e2e")}
        assert pre["flops"]["scoring"] > 0 and pre["ttft_flops_ratio"] < 1 and pre["kv_ratio"] < 1
        if kind != "qwen3_vl":
            fastv = rows[f"fastv f={f:g}"]
            layer = fastv["args"]["layer"]
            assert (fastv["budget"], fastv["visual_tokens"]) == (k, n)  # all N enter; K kept from `layer` on
            assert fastv["layer_lengths"] == [length] * layer + [text + k] * (arch.llm.layers - layer)
            assert fastv["kv_lengths"] == fastv["layer_lengths"]
            assert fastv["flops"]["vision"] == none["flops"]["vision"] and fastv["flops"]["scoring"] == 0
            assert pre["kv_cache_bytes"] < fastv["kv_cache_bytes"] < none["kv_cache_bytes"]
    full = FF.family_pipeline_flops(arch, SIZE, None, text_tokens=text, new_tokens=1)["flops"]
    assert none["flops"] == {s: v for s, v in full.items() if s not in ("decode", "e2e")}
    for row in result["rows"]:  # the cache's own tensors hold exactly what the per-layer lengths say
        assert row["kv_cache_bytes"] == row["kv_cache_bytes_analytic"] == kv_cache_bytes_layers(
            arch.llm, 1, row["layer_lengths"], 4)
    assert json.loads((out / f"family_{folder.name}.json").read_text())["rows"][0]["visual_tokens"] == n
    assert "| fastervlm f=0.25 |" in (out / f"family_{folder.name}.md").read_text()


def _count(fn) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("fraction", [None, 0.25])
def test_llm_prefill_flops_match_flop_counter(small, fraction):
    """FlopCounterMode on the family's own prefill loop equals the FLOPs model at the lengths the bench reports."""
    from llava.bench.family_bench import FamilyConfig, family_inputs, get_steps, synthetic_image
    from llava.bench.flops import prefill_flops_layers
    from llava.model.builder import load_pretrained_model

    kind, folder, result, _ = small
    _, model, processor, _ = load_pretrained_model(str(folder), device="cpu", torch_dtype="float32")
    arch = FM.family_arch_from_config(folder.name, json.loads((folder / "config.json").read_text()),
                                      processor.image_processor)
    steps = get_steps(kind)
    kw = family_inputs(processor, kind, synthetic_image(SIZE), "cpu", torch.float32)
    cfg = FamilyConfig(None if fraction is None else "fastervlm", fraction).pruning()
    with torch.no_grad():
        mm, extra = steps.prepare(model, kw, cfg)
    loop = steps.loop(model, mm, cfg, extra)
    got = _count(lambda: loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids))
    label = "none" if fraction is None else f"fastervlm f={fraction:g}"
    row = next(r for r in result["rows"] if r["label"] == label)
    assert got == prefill_flops_layers(arch.llm, 1, row["layer_lengths"]) == row["flops"]["prefill"]


def test_timed_family_run_refuses_other_modes():
    from llava.bench.cli import main

    with pytest.raises(SystemExit, match="timed run is its own table"):
        main(["--arch", "qwen3-vl-8b", "--random-weights", "--headline"])
    with pytest.raises(SystemExit, match="give --keep-fractions"):
        main(["--arch", "qwen3-vl-8b", "--random-weights", "--visual-token-num", "64"])
