"""Every registered pre-LLM method runs per frame on a video: each frame's choice is the method's choice
on that frame alone (its own signals), frames stay in order, and only kept tokens are projected."""

from __future__ import annotations

import pytest
import torch

from llava.model.llava_arch import add_projected, tower_needs
from llava.pruning import PruningConfig, get_method, list_methods
from llava.pruning.base import VisionSignals, gather_tokens

from video_helpers import FRAMES

K = 16
# the pre-LLM methods that run on a video; CDPruner (question-aware) is refused by name below
PRE_LLM = [name for name in list_methods() if get_method(name).stage == "pre_llm"
           and "text_relevance" not in get_method(name).needs]
TEXT_AWARE = [name for name in list_methods() if "text_relevance" in get_method(name).needs]
# Options that fit the tiny tower (3 layers run); every other method takes its defaults.
ARGS = {"vtc_cls": {"start_layer": 1}}


def frame_signals(model, frames: torch.Tensor, needs: frozenset[str]) -> VisionSignals:
    """The patch signals of each frame, from the video tower run on the frames as a batch of pictures."""
    out = model.get_video_tower()(frames, needs=tower_needs(needs))
    patches = VisionSignals(out.features[:, 1:], **out.values)  # drop each frame's [CLS] row
    return add_projected(patches, model.mm_projector, needs)


@pytest.mark.parametrize("name", PRE_LLM)
def test_each_pre_llm_method_chooses_per_frame_as_on_the_frame_alone(name, video_llava, clips):
    model = video_llava[1]
    method = get_method(name)
    cfg = PruningConfig(method=name, visual_token_num=K, method_args=ARGS.get(name, {}))
    enc = model.encode_videos(clips[0][None], pruning=cfg)
    assert enc.token_counts == [FRAMES * K] and enc.frames == [FRAMES] and enc.frame_budgets == [K]
    signals = frame_signals(model, clips[0], method.needs)
    kept = enc.kept_indices[0]
    assert kept.shape[0] == FRAMES
    with torch.no_grad():
        for f in range(FRAMES):
            alone = method.select(signals.index([f]), K, **cfg.args)
            assert torch.equal(kept[f], alone.indices[0]), f"{name}: frame {f}"
            if alone.tokens is not None:
                expected = model.mm_projector(alone.tokens[0])
            elif signals.projected is not None:
                expected = gather_tokens(signals.projected[[f]], alone.indices)[0]
            else:
                expected = model.mm_projector(gather_tokens(signals.features[[f]], alone.indices)[0])
            torch.testing.assert_close(enc.features[0][f * K:(f + 1) * K], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", PRE_LLM)
def test_each_pre_llm_method_runs_in_temporal_mode_with_t_times_k_tokens(name, video_llava, clips):
    model = video_llava[1]
    cfg = PruningConfig(method=name, visual_token_num=K, method_args=ARGS.get(name, {}), video_mode="temporal")
    enc = model.encode_videos(clips[0][None], pruning=cfg)
    assert enc.token_counts == [FRAMES * K]
    kept = enc.kept_indices[0]
    assert kept.ndim == 1 and bool((kept[1:] > kept[:-1]).all()) and int(kept.max()) < FRAMES * 256


def test_a_ratio_resolves_against_a_frames_patches(video_llava, clips):
    model = video_llava[1]
    enc = model.encode_videos(clips[0][None], pruning=PruningConfig(ratio=0.75))
    assert enc.frame_budgets == [64] and enc.token_counts == [FRAMES * 64]


@pytest.mark.parametrize("name", TEXT_AWARE)
def test_question_aware_methods_are_refused_on_video_by_name(name, video_llava, clips):
    with pytest.raises(ValueError, match=f"pruning method '{name}' cannot run on Video-LLaVA: .*text tower"):
        video_llava[1].encode_videos(clips[0][None], pruning=PruningConfig(method=name, visual_token_num=K))
