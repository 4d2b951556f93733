"""The vision-signal registry: each signal equals eager CLIP attention, and the tower probes only what is asked."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import CLIPVisionModel

from llava.mm_utils import process_images
from llava.pruning import VisionSignals, known_signals, register_signal
from llava.pruning.signals import signal_spec, tower_plan


@pytest.fixture(scope="module")
def tower_and_pixels(tiny, sample_images):
    _, model, processor, _ = tiny
    return model.get_vision_tower(), process_images(sample_images[:2], processor, model.config)


@pytest.fixture(scope="module")
def eager_attentions(tower_and_pixels):
    tower, pixels = tower_and_pixels
    eager = CLIPVisionModel._from_config(copy.deepcopy(tower.config), attn_implementation="eager").eval()
    eager.load_state_dict(tower.vision_tower.state_dict())
    assert tower.config._attn_implementation == "sdpa"  # the session model is left as it was
    with torch.no_grad():
        out = eager(pixels, output_attentions=True, output_hidden_states=True)
    return out.attentions, out.hidden_states  # L x [B, H, T, T]


def test_every_builtin_signal_is_registered():
    assert {"cls_attn", "cls_attn_layers", "keys", "mean_attn", "scores"} <= known_signals()


def test_mean_attn_equals_the_mean_of_the_full_eager_map(tower_and_pixels, eager_attentions):
    tower, pixels = tower_and_pixels
    attentions, _ = eager_attentions
    last = tower.num_run_layers - 1
    sig = tower(pixels, needs=frozenset({"mean_attn"}))
    ref = attentions[last].mean(dim=1).mean(dim=1)[:, 1:]  # heads, then queries -> [B, N]
    torch.testing.assert_close(sig.mean_attn, ref, atol=1e-6, rtol=1e-5)
    assert sig.cls_attn is None and sig.keys is None


def test_cls_signals_equal_eager_rows(tower_and_pixels, eager_attentions):
    tower, pixels = tower_and_pixels
    attentions, _ = eager_attentions
    last = tower.num_run_layers - 1
    sig = tower(pixels, needs=frozenset({"cls_attn", "cls_attn_layers"}))
    torch.testing.assert_close(sig.cls_attn, attentions[last][:, :, 0, 1:].mean(1), atol=1e-6, rtol=1e-5)
    layers = torch.stack([a[:, :, 0, 1:].mean(1) for a in attentions[: last + 1]], dim=1)
    torch.testing.assert_close(sig.cls_attn_layers, layers, atol=1e-6, rtol=1e-5)


def test_the_tower_probes_only_the_layers_a_signal_names(tower_and_pixels):
    tower, _ = tower_and_pixels
    last = tower.num_run_layers - 1
    assert tower_plan({"cls_attn"}, last, prefix=1) == ([last], slice(0, 1), True)
    assert tower_plan({"keys"}, last, prefix=1) == ([last], slice(0, 1), False)  # k only
    assert tower_plan({"mean_attn", "keys"}, last, prefix=1) == ([last], None, True)  # all q rows
    assert tower_plan({"cls_attn_layers"}, last, prefix=1)[0] == list(range(last + 1))


def test_towers_without_cls_refuse_cls_signals():
    with pytest.raises(ValueError, match="'cls_attn' needs a \\[CLS\\] token, which this vision tower lacks"):
        tower_plan({"cls_attn"}, 3, prefix=0)
    assert tower_plan({"mean_attn"}, 3, prefix=0) == ([3], None, True)
    with pytest.raises(ValueError, match="'scores' is computed outside the vision tower"):
        tower_plan({"scores"}, 3, prefix=1)


def test_bundles_subset_and_gather_along_each_signals_patch_axis():
    feats = torch.arange(2 * 4 * 3.0).view(2, 4, 3)
    layers = torch.arange(2 * 5 * 4.0).view(2, 5, 4)  # [B, L, N]
    sig = VisionSignals(feats, cls_attn=feats[..., 0], cls_attn_layers=layers)
    one = sig.index([1])
    assert torch.equal(one.cls_attn_layers, layers[1:]) and one.keys is None
    picked = sig.gather(torch.tensor([0, 1, 1]), torch.tensor([3, 0, 2]))
    assert torch.equal(picked.features[0], torch.stack([feats[0, 3], feats[1, 0], feats[1, 2]]))
    assert torch.equal(picked.cls_attn_layers[0], torch.stack([layers[0, :, 3], layers[1, :, 0], layers[1, :, 2]], 1))
    with pytest.raises(ValueError, match="unknown vision signal 'cls_atn'"):
        VisionSignals(feats, cls_atn=feats[..., 0])
    with pytest.raises(AttributeError, match="no signal 'nope'"):
        sig.nope  # noqa: B018


def test_a_new_signal_is_one_registered_function(tower_and_pixels):
    name = "test_key_norm"
    if name not in known_signals():
        @register_signal(name, q_rows="none")
        def key_norm(x):
            """[B, N] L2 norm of each patch's key at the selected layer."""
            return x.captured[x.last].k[:, x.prefix:].norm(dim=-1)

    tower, pixels = tower_and_pixels
    sig = tower(pixels, needs=frozenset({name}))
    keys = tower(pixels, needs=frozenset({"keys"}))
    assert sig.values[name].shape == (2, tower.num_patches)
    assert signal_spec(name).description.startswith("[B, N] L2 norm")
    assert keys.keys.shape[:2] == sig.values[name].shape


def test_cls_feature_is_the_selected_layers_cls_row_and_probes_nothing(tower_and_pixels, eager_attentions):
    tower, pixels = tower_and_pixels
    assert tower_plan({"cls_feature"}, tower.num_run_layers - 1, prefix=1) == ([], slice(0, 1), False)
    sig = tower(pixels, needs=frozenset({"cls_feature"}))
    full = tower.vision_tower(pixels, output_hidden_states=True).hidden_states[tower.num_run_layers]
    torch.testing.assert_close(sig.cls_feature, full[:, 0], atol=0, rtol=0)
    _, hidden = eager_attentions
    torch.testing.assert_close(sig.cls_feature, hidden[tower.num_run_layers][:, 0], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="'cls_feature' needs a \\[CLS\\] token"):
        tower_plan({"cls_feature"}, 3, prefix=0)


def test_per_image_signals_subset_by_image_and_gather_from_the_first_image():
    feats = torch.arange(2 * 4 * 3.0).view(2, 4, 3)
    cls = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])  # [B, D]: no patch axis
    sig = VisionSignals(feats, cls_feature=cls)
    assert torch.equal(sig.index([1]).cls_feature, cls[1:])
    assert torch.equal(sig.gather(torch.tensor([1, 0]), torch.tensor([0, 3])).cls_feature, cls[1:])
    assert torch.equal(sig.with_values(projected=feats * 2).projected, feats * 2) and sig.projected is None


def test_projected_is_filled_in_by_the_model_not_the_tower():
    with pytest.raises(ValueError, match="'projected' is computed outside the vision tower"):
        tower_plan({"projected"}, 3, prefix=1)
