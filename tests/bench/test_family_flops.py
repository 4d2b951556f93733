"""FLOPs of the processor families (llava.bench.family_flops): hand-computed values at real dimensions, and
FlopCounterMode on a random OneVision of the real geometry (small widths) built by llava.bench.models."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llava.bench import family_flops as FF
from llava.bench.flops import prefill_flops


def _prefill(length, hidden, inter, layers, heads, kv, head_dim, vocab):
    """LLM prefill by hand: q,o and k,v projections, the gated FFN, QK^T + AV, the last row's LM head."""
    per_token = 2 * hidden * heads * head_dim + 2 * hidden * kv * head_dim + 3 * hidden * inter
    return 2 * (layers * (length * per_token + 2 * heads * length * length * head_dim) + hidden * vocab)


def test_onevision_7b_at_480x640():
    r = FF.family_pipeline_flops("onevision-qwen2-7b", (480, 640), None, text_tokens=20, new_tokens=1)
    # best grid 2 x 2 crops of 384 px -> 5 views; the 54 x 54 patch grid is cut to 40 rows (480 * 54 / 640 = 40.5);
    # 2160 grid tokens, no down-sampling (2160 < 1.1^2 * 9 * 729), 40 newlines: N = 729 + 2160 + 40
    assert (r["patches"], r["visual_tokens_unpruned"]) == (5 * 729, 2929)
    views, t, d, inter = 5, 729, 1152, 4304
    vision = 2 * views * (t * 3 * 14 * 14 * d + 26 * (t * (4 * d * d + 2 * d * inter) + 2 * t * t * d))
    flops = r["flops"]
    assert flops["vision"] == vision
    assert flops["projector"] == 2 * (729 + 2160) * (1152 * 3584 + 3584 * 3584)  # base + cut grid, no newlines
    assert flops["scoring"] == 0 and flops["decode"] == 0
    assert flops["prefill"] == _prefill(20 + 2929, 3584, 18944, 28, 28, 4, 128, 152128)
    k64 = FF.family_pipeline_flops("onevision-qwen2-7b", (480, 640), 64, text_tokens=20)["flops"]
    assert k64["scoring"] == 2 * views * t * t * (d + 1)  # mean_attn: QK^T of every view at one layer + the row sum
    assert k64["projector"] == 2 * 64 * (1152 * 3584 + 3584 * 3584)
    assert k64["prefill"] == _prefill(84, 3584, 18944, 28, 28, 4, 128, 152128)


def test_qwen25_vl_7b_at_480x640():
    r = FF.family_pipeline_flops("qwen2.5-vl-7b", (480, 640), None, text_tokens=20, new_tokens=1)
    # resized to multiples of 28: 476 x 644 -> 34 x 46 patches, 17 x 23 merged tokens
    assert (r["resized"], r["patches"], r["visual_tokens_unpruned"]) == ([476, 644], 1564, 391)
    # windows of 4 x 4 merged tokens over 17 x 23: 20 of 64 patches, 4 of 48 (last column),
    # 5 of 16 (last row), 1 of 12 (the corner)
    windows = [64] * 20 + [48] * 4 + [16] * 5 + [12]
    p, d, inter = 1564, 1280, 3420
    linear = p * (4 * d * d + 3 * d * inter)  # gated SiLU MLP
    full = 2 * p * p * d
    windowed = sum(2 * w * w * d for w in windows)
    vision = 2 * (p * 3 * 2 * 14 * 14 * d + 32 * linear + 4 * full + 28 * windowed)
    assert r["flops"]["vision"] == vision
    assert r["flops"]["projector"] == 2 * 391 * (5120 * 5120 + 5120 * 3584)
    assert r["flops"]["prefill"] == _prefill(20 + 391, 3584, 18944, 28, 28, 4, 128, 152064)
    k64 = FF.family_pipeline_flops("qwen2.5-vl-7b", (480, 640), 64, text_tokens=20)["flops"]
    assert k64["projector"] == 2 * 64 * (5120 * 5120 + 5120 * 3584)  # the merger on the kept groups only
    assert k64["scoring"] == full + 2 * p * p  # at one full-attention block


def test_qwen3_vl_8b_at_480x640():
    r = FF.family_pipeline_flops("qwen3-vl-8b", (480, 640), None, text_tokens=20, new_tokens=1)
    assert (r["resized"], r["patches"], r["visual_tokens_unpruned"]) == ([480, 640], 1200, 300)
    p, d, inter = 1200, 1152, 4304
    vision = 2 * (p * 3 * 2 * 16 * 16 * d + 27 * (p * (4 * d * d + 2 * d * inter) + 2 * p * p * d))
    assert r["flops"]["vision"] == vision
    assert r["flops"]["projector"] == 2 * 4 * 300 * (4608 * 4608 + 4608 * 4096)  # merger + 3 DeepStack mergers
    assert r["flops"]["prefill"] == _prefill(320, 4096, 12288, 36, 32, 8, 128, 151936)
    k64 = FF.family_pipeline_flops("qwen3-vl-8b", (480, 640), 64, text_tokens=20)["flops"]
    assert k64["projector"] == 2 * 4 * 64 * (4608 * 4608 + 4608 * 4096)


def test_small_images_keep_everything_and_bad_input_is_refused():
    tiny = FF.family_pipeline_flops("qwen3-vl-8b", (64, 64), 64)
    assert tiny["resized"] == [256, 256] and tiny["visual_tokens"] == 64 == tiny["visual_tokens_unpruned"]
    assert tiny["flops"]["scoring"] == 0  # N <= K: nothing is pruned
    with pytest.raises(ValueError, match="unknown family --arch 'qwen9'"):
        FF.family_pipeline_flops("qwen9", (64, 64))
    with pytest.raises(ValueError, match="K must be >= 1"):
        FF.family_pipeline_flops("qwen3-vl-8b", (64, 64), 0)
    from llava.bench.models import onevision_raw_config

    with pytest.raises(ValueError, match="qwen2.5-vl-7b is a qwen2.5-vl preset"):
        onevision_raw_config("qwen2.5-vl-7b")


# ---- against FlopCounterMode on a random OneVision with the real geometry -------------------------------
SMALL = FF.FamilyArch("ov-small", "llava-onevision", FF.TowerDims(32, 64, 2, 14, heads=2), ((32, 64), (64, 64)),
                      FF._llm(64, 128, 2, 4, 2, 300), onevision={**FF.FAMILY_ARCHS["onevision-qwen2-7b"].onevision,
                                                                 "vision_aspect_ratio": "anyres_max_2",
                                                                 "image_token_index": 299})


@pytest.fixture(scope="module")
def small_model():
    from llava.bench.models import build_random_onevision

    return build_random_onevision(SMALL, seed=0)


def _count(fn) -> int:
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_random_onevision_counts_match_the_model(small_model):
    """A 300 x 500 image: 1 x 2 crops, a 27 x 46 cut grid; the model's own N_i and every stage's FLOPs."""
    from llava.model.onevision import image_grid

    model = small_model
    layout = FF.image_layout(SMALL, (300, 500))
    grid = image_grid((300, 500), model.family_inputs.keywords["geometry"])
    assert layout.tokens == grid.num_tokens and len(layout.units) == grid.views == 3
    views = torch.randn(grid.views, 3, 384, 384)
    tower = model.get_vision_tower()
    assert _count(lambda: tower(views)) == FF.vision_flops(SMALL, layout)
    extra = _count(lambda: tower(views, needs=frozenset({"cls_attn"}))) - _count(lambda: tower(views))
    assert extra == FF.scoring_flops(SMALL, layout)
    x = torch.randn(layout.projected_full, 32)
    assert _count(lambda: model.mm_projector(x)) == FF.projector_flops(SMALL, layout.projected_full)
    ids = torch.cat([torch.arange(5), torch.full((grid.num_tokens,), 299), torch.arange(5, 9)])[None]
    pixels = torch.randn(1, grid.views, 3, 384, 384)
    mm = model.prepare_multimodal_inputs(ids, pixels, torch.ones_like(ids), image_sizes=[(300, 500)])
    length = mm.inputs_embeds.shape[1]
    assert length == 9 + layout.tokens
    got = _count(lambda: model(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask,
                               position_ids=mm.position_ids, logits_to_keep=1))
    assert got == prefill_flops(SMALL.llm, 1, length)


def test_random_onevision_generates_at_k64(small_model):
    from llava.model.onevision import image_grid
    from llava.pruning import PruningConfig

    grid = image_grid((300, 500), small_model.family_inputs.keywords["geometry"])
    ids = torch.cat([torch.arange(5), torch.full((grid.num_tokens,), 299), torch.arange(5, 9)])[None]
    out = small_model.generate(inputs=ids, attention_mask=torch.ones_like(ids), images=torch.randn(1, 3, 3, 384, 384),
                               image_sizes=[(300, 500)], pruning=PruningConfig(visual_token_num=64),
                               max_new_tokens=2, do_sample=False)
    assert out.shape == (1, 2) and small_model.last_multimodal.token_counts[0] <= 64
    assert FF.family_pipeline_flops(SMALL, (300, 500), 64)["visual_tokens"] == 64


def test_bench_cli_reports_family_flops_per_k(tmp_path):
    import json

    from llava.bench.cli import main

    result = main(["--arch", "qwen2.5-vl-7b", "--image-size", "480x640", "--visual-token-num", "128,64",
                   "--out", str(tmp_path)])
    assert [r["visual_tokens"] for r in result["runs"]] == [391, 128, 64]
    assert result["runs"][2] == FF.family_pipeline_flops("qwen2.5-vl-7b", (480, 640), 64)
    assert json.loads((tmp_path / "flops_qwen2.5-vl-7b.json").read_text())["runs"][1]["visual_tokens"] == 128
    with pytest.raises(SystemExit, match="reports FLOPs only"):
        main(["--arch", "qwen3-vl-8b", "--headline"])
