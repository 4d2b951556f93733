"""Decoding and sampling: PyAV frames at Video-LLaVA's indices, the PIL processor's pixels, and one-line
errors naming the file for missing, empty, unreadable, frameless and too-short videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llava.video_io import VideoDecodeError, load_video, read_video_frames, sample_frame_indices, write_test_video

from video_helpers import TOTAL, moving_square_frames


@pytest.mark.parametrize("total, expected", [
    (20, [0, 2, 5, 8, 10, 13, 16, 19]),
    (8, [0, 1, 2, 3, 4, 5, 6, 7]),
    (100, [0, 14, 28, 42, 56, 70, 84, 99]),
])
def test_sampling_is_video_llavas_linspace(total, expected):
    assert sample_frame_indices(total, 8) == expected
    assert expected == np.linspace(0, total - 1, 8, dtype=int).tolist()  # the original loader's expression


def test_a_lossless_video_gives_exactly_the_sampled_frames(videos):
    frames = read_video_frames(videos[0], 8)
    source = moving_square_frames(seed=0)
    assert len(frames) == 8
    for picture, index in zip(frames, sample_frame_indices(TOTAL, 8)):
        assert picture.mode == "RGB" and picture.size == (128, 96)
        np.testing.assert_array_equal(np.asarray(picture), source[index])


def test_a_lossy_mp4_samples_the_same_indices(videos):
    frames = read_video_frames(videos[2], 8)
    source = np.stack(moving_square_frames(seed=2)).astype(np.float32)  # [TOTAL, H, W, 3]
    nearest = [int(((source - np.asarray(p, dtype=np.float32)) ** 2).mean(axis=(1, 2, 3)).argmin()) for p in frames]
    assert nearest == sample_frame_indices(TOTAL, 8)


def test_frames_go_through_the_pil_video_llava_processor(videos, video_llava):
    from transformers import VideoLlavaImageProcessor

    pixels = load_video(videos[0], video_llava[1].video_processor, 8)
    assert pixels.shape == (8, 3, 224, 224) and pixels.dtype == torch.float32
    reference = VideoLlavaImageProcessor()(images=read_video_frames(videos[0], 8), return_tensors="pt",
                                           return_legacy_image_output=False)["pixel_values"]
    torch.testing.assert_close(pixels, reference, atol=0, rtol=0)


def _header_only(path, out):
    """A copy of a one-frame video cut just before its first frame's packet: a container with no frames."""
    import av

    with av.open(str(path)) as container:
        first = next(p for p in container.demux(video=0) if p.size)
        cut = first.pos
    out.write_bytes(path.read_bytes()[:cut])
    return out


def test_bad_videos_are_refused_naming_the_file(tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FileNotFoundError, match=r"video file .*missing\.mp4' not found \(check --video-folder\)"):
        read_video_frames(missing)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoDecodeError, match=r"video .*empty\.mp4: the file is empty \(0 bytes\)"):
        read_video_frames(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(VideoDecodeError, match=r"video .*junk\.mp4: not a readable video"):
        read_video_frames(junk)
    short = write_test_video(tmp_path / "short.mkv", moving_square_frames(n=3))
    with pytest.raises(VideoDecodeError, match=r"short\.mkv: only 3 frames, fewer than the 8 sampled "
                                               r"\(pass --num-frames 3 or fewer"):
        read_video_frames(short, 8)
    assert len(read_video_frames(short, 3)) == 3
    one = write_test_video(tmp_path / "one.mkv", moving_square_frames(n=1))
    frameless = _header_only(tmp_path / "one.mkv", tmp_path / "frameless.mkv")
    assert one
    with pytest.raises(VideoDecodeError, match=r"frameless\.mkv: the file holds no decodable video frames"):
        read_video_frames(frameless)
    for error in (VideoDecodeError, FileNotFoundError):
        assert issubclass(error, (ValueError, OSError))
