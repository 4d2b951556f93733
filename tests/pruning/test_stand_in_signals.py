"""Signals that stand in for [CLS] attention: each equals a reference built from eager CLIP / SigLIP,
and `--pruning-args cls_stand_in=...` picks the one fastervlm ranks by, on CLIP and on SigLIP."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import CLIPVisionModel

from llava.mm_utils import process_images
from llava.pruning import PruningConfig, get_method, parse_method_args
from llava.pruning.base import VisionSignals, topk_raster
from llava.pruning.signals import CLS_STAND_INS, DEEP_LAYERS, tower_plan


@pytest.fixture(scope="module")
def clip(tiny, sample_images):
    _, model, processor, _ = tiny
    return model, process_images(sample_images[:2], processor, model.config)


@pytest.fixture(scope="module")
def eager(clip):
    model, pixels = clip
    tower = model.get_vision_tower()
    ref = CLIPVisionModel._from_config(copy.deepcopy(tower.config), attn_implementation="eager").eval()
    ref.load_state_dict(tower.vision_tower.state_dict())
    with torch.no_grad():
        out = ref(pixels, output_attentions=True, output_hidden_states=True)
    return ref, out


def test_mean_attn_deep_is_the_mean_of_the_last_layers_eager_maps(clip, eager):
    model, pixels = clip
    tower = model.get_vision_tower()
    last = tower.num_run_layers - 1
    layers = list(range(max(0, last - DEEP_LAYERS + 1), last + 1))
    assert tower_plan({"mean_attn_deep"}, last, prefix=1)[0] == layers
    got = tower(pixels, needs=frozenset({"mean_attn_deep"})).mean_attn_deep
    ref = torch.stack([eager[1].attentions[i].mean(dim=(1, 2))[:, 1:] for i in layers]).mean(0)  # [B, N]
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)


def test_pooled_query_attn_is_the_mean_querys_softmax_row(clip, eager):
    model, pixels = clip
    tower = model.get_vision_tower()
    last = tower.num_run_layers - 1
    ref_model, out = eager
    layer = ref_model.encoder.layers[last]
    x = layer.layer_norm1(out.hidden_states[last])[:, 1:]  # the layer's input, patches only: [B, N, D]
    attn = layer.self_attn
    heads = attn.num_heads
    q = attn.q_proj(x.mean(dim=1, keepdim=True))  # affine: the mean query is the query of the mean
    k = attn.k_proj(x)
    b, n, d = k.shape
    logits = torch.einsum("bhd,bnhd->bhn", q.view(b, heads, -1), k.view(b, n, heads, -1)) * attn.scale
    ref = logits.softmax(dim=-1).mean(dim=1)  # [B, N]
    got = tower(pixels, needs=frozenset({"pooled_query_attn"})).pooled_query_attn
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(got.sum(-1), torch.ones(b), atol=1e-5, rtol=0)


def test_feature_norm_is_the_norm_of_the_selected_layers_patch_features(clip, eager):
    model, pixels = clip
    tower = model.get_vision_tower()
    hidden = eager[1].hidden_states[tower.num_run_layers][:, 1:]  # [B, N, D]
    got = tower(pixels, needs=frozenset({"feature_norm"}))
    torch.testing.assert_close(got.feature_norm, hidden.norm(dim=-1), atol=1e-5, rtol=1e-5)
    assert tower_plan({"feature_norm"}, 3, prefix=0) == ([], slice(0, 1), False)  # no q/k probed at all


@pytest.mark.parametrize("stand_in", CLS_STAND_INS)
def test_fastervlm_on_clip_ranks_by_the_stand_in_it_is_given(clip, stand_in):
    model, pixels = clip
    cfg = PruningConfig("fastervlm", 32, method_args={"cls_stand_in": stand_in})
    kept = model.encode_images(pixels, pruning=cfg).kept_indices
    score = getattr(model.get_vision_tower()(pixels, needs=frozenset({stand_in})), stand_in)
    for b in range(pixels.shape[0]):
        assert torch.equal(kept[b], topk_raster(score[b:b + 1], 32)[0])
    cls = model.encode_images(pixels, pruning=PruningConfig("fastervlm", 32)).kept_indices  # auto: the [CLS] row
    ref = model.get_vision_tower()(pixels, needs=frozenset({"cls_attn"})).cls_attn
    assert torch.equal(cls[0], topk_raster(ref[:1], 32)[0])


def test_the_stand_in_option_is_validated_and_not_passed_to_the_method():
    assert parse_method_args("cls_stand_in=feature_norm", "fastervlm") == {"cls_stand_in": "feature_norm"}
    with pytest.raises(ValueError, match=r"cls_stand_in='bogus': must be one of \['mean_attn'"):
        parse_method_args("cls_stand_in=bogus", "vispruner")
    feats = torch.randn(1, 16, 8)
    scores = torch.rand(1, 16)
    sel = get_method("fastervlm").select(VisionSignals(feats, cls_attn=scores), 4, cls_stand_in="mean_attn")
    assert torch.equal(sel.indices, topk_raster(scores, 4))
    assert get_method("fastervlm").defaults == {"cls_stand_in": "auto"}
    assert get_method("vispruner").signal_options == frozenset({"cls_stand_in"})


def test_the_drivers_pass_the_stand_in_through_pruning_args_and_record_it(tiny_path, tmp_path):
    import json
    from pathlib import Path

    from llava.eval.model_vqa_science import main

    samples = Path(__file__).resolve().parents[2] / "assets" / "samples"
    qfile = tmp_path / "sqa.json"
    qfile.write_text(json.dumps([{"id": "1", "image": "shapes.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?\nA. a circle\nB. a dog"}]}]))
    common = ["--image-folder", str(samples), "--question-file", str(qfile), "--device", "cpu", "--conv-mode", "vicuna_v1",
              "--temperature", "0", "--max_new_tokens", "2", "--visual-token-num", "29"]
    main(["--model-path", tiny_path, "--answers-file", str(tmp_path / "a.jsonl"),
          "--pruning-args", "cls_stand_in=feature_norm", *common])
    meta = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])["metadata"]
    assert meta["pruning_args"] == {"cls_stand_in": "feature_norm"} and meta["visual_tokens"] == 29
    with pytest.raises((ValueError, SystemExit)):
        main(["--model-path", tiny_path, "--answers-file", str(tmp_path / "b.jsonl"),
              "--pruning-args", "cls_stand_in=bogus", *common])
