"""Session fixtures for the video tests: the tiny Video-LLaVA saved with transformers' own
save_pretrained, loaded by us and by transformers, and small videos encoded with PyAV at test time."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("av", reason="the video tests need PyAV (pip install 'fastervlm[video]')")

from video_helpers import FRAMES, moving_square_frames  # noqa: E402


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory):
    from llava.model.family_video_llava import save_tiny_video_llava

    return save_tiny_video_llava(tmp_path_factory.mktemp("video-llava"))


@pytest.fixture(scope="session")
def video_llava(video_dir):
    """(tokenizer, model, image_processor, context_len) of the tiny Video-LLaVA, fp32 CPU."""
    from llava.model.builder import load_pretrained_model

    torch.set_num_threads(2)
    return load_pretrained_model(str(video_dir), device="cpu", torch_dtype="float32")


@pytest.fixture(scope="session")
def hf_video_llava(video_dir):
    """transformers' own VideoLlavaForConditionalGeneration on the same folder (fp32, eager towers)."""
    from transformers import VideoLlavaForConditionalGeneration

    model = VideoLlavaForConditionalGeneration.from_pretrained(str(video_dir), dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    """Two lossless (ffv1) videos of TOTAL frames and one mpeg4 video, written with PyAV."""
    from llava.video_io import write_test_video

    folder = tmp_path_factory.mktemp("videos")
    return [write_test_video(folder / "a.mkv", moving_square_frames(seed=0)),
            write_test_video(folder / "b.mkv", moving_square_frames(seed=1)[::-1]),
            write_test_video(folder / "c.mp4", moving_square_frames(seed=2), codec="mpeg4")]


@pytest.fixture(scope="session")
def clips(videos, video_llava):
    """The preprocessed frames [T, 3, 224, 224] of each video."""
    from llava.video_io import load_video

    model = video_llava[1]
    return [load_video(path, model.video_processor, FRAMES) for path in videos]
