"""The bench's video preset: Video-LLaVA-7B's FLOPs model against hand-computed values, the random
model's shape, and `--efficiency --arch video-llava-tiny` end to end (per-frame budgets against FastV)."""

from __future__ import annotations

import pytest

from llava.bench import flops as F
from llava.bench.video import VIDEO_ARCHS, build_random_video_model, video_dims, video_flops_model

# Video-LLaVA-7B by hand: Vicuna-7B (H 4096, FFN 11008, 32 heads of 128, 32 layers, vocabulary 32064), CLIP-L/14 at
# 224 px (T = 257 tokens per frame, D 1024, FFN 4096, 23 of 24 layers run), mlp2x_gelu 1024 -> 4096 -> 4096.
MACS_PER_TOKEN = 4 * 4096 * 4096 + 3 * 4096 * 11008  # q, k, v, o + gate, up, down = 202,375,168
VISION_8_FRAMES = 1_242_286_489_600  # 2 * 8 * (256*3*14*14*1024 + 23 * (257*(4*1024^2 + 2*1024*4096) + 2*257^2*1024))
TEXT = 40  # prompt tokens besides the video
PREFILL_NONE = 29_450_987_634_688  # 2 * (32 * (2096 * MACS + 2*32*2096^2*128) + 4096 * 32064), L = 2056 + 40
PREFILL_K13 = 1_876_223_852_544  # the same at L = 8 * 13 + 40 = 144
PREFILL_FASTV13 = 3_599_663_759_360  # layers 0-1 at 2096, 2-31 at 144, + 2*32*1*2096*128 (last row at layer 1)
KV_NONE, KV_K13, KV_FASTV13 = 1_098_907_648, 75_497_472, 139_460_608  # 2 * 32 heads * 128 * 2 bytes per token-layer


def test_the_flops_model_equals_hand_counts():
    d = video_dims("video-llava-7b")
    assert (d.num_patches, d.layers, d.vocab, d.v_layers_run, d.head_dim) == (256, 32, 32064, 23, 128)
    assert F._llm_linear_macs_per_token(d) == MACS_PER_TOKEN == 202_375_168
    assert F.vision_flops(d, 8) == VISION_8_FRAMES
    rows = {(r["method"], r["k_per_frame"]): r for r in video_flops_model(d, 8, TEXT, [192, 128, 64, 26, 13])}
    assert [k for _, k in rows][:3] == [None, 192, 192] and len(rows) == 11
    none, pre, fastv = rows["none", None], rows["fastervlm", 13], rows["fastv", 13]
    assert (none["video_tokens"], pre["video_tokens"], fastv["video_tokens"]) == (2056, 104, 104)
    assert none["prefill"] == PREFILL_NONE and pre["prefill"] == PREFILL_K13 and fastv["prefill"] == PREFILL_FASTV13
    assert (none["kv_cache_bytes"], pre["kv_cache_bytes"], fastv["kv_cache_bytes"]) == (KV_NONE, KV_K13, KV_FASTV13)
    # TTFT adds the tower on 8 frames and the projector on what it projects: 2056 tokens, or 104 after pruning
    # (plus one [CLS] row per frame, 2 * 257 * 1024 each) for FasterVLM; FastV projects all 2056.
    projector = lambda tokens: 2 * tokens * (1024 * 4096 + 4096 * 4096)  # noqa: E731
    assert none["ttft"] == VISION_8_FRAMES + projector(2056) + PREFILL_NONE
    assert pre["ttft"] == VISION_8_FRAMES + 8 * 2 * 257 * 1024 + projector(104) + PREFILL_K13
    assert fastv["ttft"] == VISION_8_FRAMES + projector(2056) + PREFILL_FASTV13
    assert pre["prefill_vs_none"] == PREFILL_K13 / PREFILL_NONE
    assert fastv["kv_cache_bytes_vs_none"] == KV_FASTV13 / KV_NONE
    assert rows["fastervlm", 192]["video_tokens"] == 1536 and rows["fastv", 26]["video_tokens"] == 208


def test_the_random_model_has_the_preset_s_shape():
    model = build_random_video_model("video-llava-tiny", llm_layers=2)
    d, want = F.ModelDims.from_model(model), video_dims("video-llava-tiny")
    assert d == F.ModelDims(**{**want.to_dict(), "layers": 2})
    assert model.num_frames == VIDEO_ARCHS["video-llava-tiny"]["frames"] == 8
    assert model.get_video_tower().select_feature == "cls_patch" and model.get_video_tower().num_patches == 256
    assert model.config.num_hidden_layers == 2 and model.lm_head.out_features == 32064


def test_video_efficiency_run_end_to_end(tmp_path):
    from llava.bench.cli import main

    out = tmp_path / "eff"
    result = main(["--efficiency", "--arch", "video-llava-tiny", "--dtype", "float32", "--llm-layers", "3",
                   "--pruning-method", "none,fastervlm,fastv", "--visual-token-num", "13", "--repeats", "1",
                   "--max-new-tokens", "2", "--wait-quiet", "0", "--retries", "0", "--clock", "cpu",
                   "--out", str(out)])
    for ext in ("json", "md", "png"):
        assert (out / f"efficiency.{ext}").stat().st_size > 0
    rows = {r["label"]: r for r in result["runs"]}
    assert list(rows) == ["none", "fastervlm K=104 (13/frame)", "fastv K=104 (13/frame)"]
    none, pre, fastv = rows.values()
    assert none["visual_tokens"] == [2056] and pre["visual_tokens"] == [104] and fastv["visual_tokens"] == [2056]
    assert fastv["prune_layers"] == [[2]] and fastv["visual_tokens_after_layers"] == [[104]]
    assert pre["k"] == fastv["k"] == 104 and pre["k_per_frame"] == 13
    text = none["prompt_length"] - 2056
    assert pre["prompt_length"] == text + 104 and fastv["layer_lengths"] == [text + 2056] * 2 + [text + 104]
    d = video_dims("video-llava-tiny")
    d = F.ModelDims(**{**d.to_dict(), "layers": 3})
    assert none["flops"]["prefill"] == F.prefill_flops_layers(d, 1, [text + 2056] * 3)
    assert pre["flops"]["prefill"] == F.prefill_flops_layers(d, 1, [text + 104] * 3)
    assert none["flops"]["vision"] == pre["flops"]["vision"] == F.vision_flops(d, 8)
    assert none["flops"]["projector"] == F.projector_flops(d, 2056)
    assert pre["flops"]["projector"] == F.projector_flops(d, 104)
    assert pre["flops"]["scoring"] == F.scoring_flops(d, 8, {"cls_attn"}) and none["flops"]["scoring"] == 0
    for r in rows.values():
        assert r["kv_cache_bytes"] == r["kv_cache_bytes_analytic"] > 0
    assert fastv["kv_cache_bytes"] < none["kv_cache_bytes"] and pre["kv_cache_bytes"] < fastv["kv_cache_bytes"]
    assert fastv["prefill_speedup_flops"] == pytest.approx(none["flops"]["prefill"] / fastv["flops"]["prefill"])
    assert set(result["fastv_check"]["per_budget"]) == {104}
    model = {(r["method"], r["k_per_frame"]): r for r in result["flops_model"]}
    assert model["fastervlm", 13]["video_tokens"] == 104 and result["settings"]["frames"] == 8
    md = (out / "efficiency.md").read_text()
    assert "| fastv K=104 (13/frame) | 104 | 2056 | L2: 104 |" in md and "FLOPs model at full depth" in md


def test_a_video_arch_needs_efficiency():
    from llava.bench.cli import main

    with pytest.raises(SystemExit, match="video preset of --efficiency"):
        main(["--arch", "video-llava-7b", "--random-weights"])


def test_a_video_pass_s_flops_match_the_counter():
    """Tower on 8 frames (+ the [CLS] rows), selection and projector, then the LLM prefill: FlopCounterMode
    (SDPA on its math backend) against `video_pass_flops`, unpruned and at K = 13 per frame."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from llava.bench.efficiency import EffConfig
    from llava.bench.measure import Clock
    from llava.bench.models import tiny_tokenizer
    from llava.bench.stages import _Decoder
    from llava.bench.video import make_video_batch, video_pass_flops, video_processor, video_run
    from llava.model.llava_arch import tower_needs
    from llava.model.video_llava import VideoSignals
    from llava.pruning import PruningConfig

    model = build_random_video_model("video-llava-tiny", llm_layers=2)
    batch = make_video_batch(tiny_tokenizer(), video_processor(), 1, 8, "cpu", torch.float32)
    d = F.ModelDims.from_model(model)
    tower = model.get_video_tower()
    for cfg in (EffConfig("none", None), EffConfig("fastervlm", 13)):
        k = cfg.k
        needs = frozenset({"cls_attn"}) if k else frozenset()
        pruning = PruningConfig("fastervlm", k)
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as pre_llm:
            frames = tower(batch.images.flatten(0, 1), needs=tower_needs(needs))
            encoded = model.encode_videos(None, pruning=pruning, signals=VideoSignals(frames, 8))
        with torch.no_grad():
            mm = model.prepare_multimodal_inputs(batch.input_ids, None, batch.attention_mask, padding_side="left",
                                                 encoded=encoded)
            decoder = _Decoder(model, mm, pruning)
            with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as prefill:
                decoder.prefill(mm)
        result = video_run(model, cfg, batch, 1, Clock("cpu"))
        want = video_pass_flops(d, cfg, result, 1, frames=8)
        assert pre_llm.get_total_flops() == want["vision"] + want["scoring"] + want["projector"]
        assert prefill.get_total_flops() == want["prefill"]


def test_a_video_llava_checkpoint_runs_the_video_preset(tmp_path):
    from llava.bench.cli import main
    from llava.model.family_video_llava import save_tiny_video_llava

    folder = str(save_tiny_video_llava(tmp_path))
    result = main(["--efficiency", "--model-path", folder, "--dtype", "float32", "--pruning-method", "none,fastervlm",
                   "--visual-token-num", "26", "--repeats", "1", "--max-new-tokens", "1", "--wait-quiet", "0",
                   "--retries", "0", "--clock", "cpu", "--out", str(tmp_path / "eff")])
    assert [(r["label"], r["visual_tokens"]) for r in result["runs"]] == [("none", [2056]),
                                                                         ("fastervlm K=208 (26/frame)", [208])]
    assert result["flops_model"][1]["video_tokens"] == 208
    with pytest.raises(SystemExit, match="runs at its full depth"):
        main(["--efficiency", "--model-path", folder, "--llm-layers", "2"])
