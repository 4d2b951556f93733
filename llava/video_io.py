"""Read a video file as the T frames Video-LLaVA sees: decode with PyAV, sample uniformly, preprocess.

Sampling follows Video-LLaVA's own loader (its default `decord` backend in
`videollava/model/multimodal_encoder/languagebind/video/processing_video.py`): for a video of N
frames, the frames at `np.linspace(0, N - 1, T, dtype=int)`, first and last included.

Decoding uses PyAV (`pip install "fastervlm[video]"`), FFmpeg's maintained Python binding: it ships
manylinux/macOS/Windows wheels with FFmpeg inside, needs neither torch nor torchvision, and reports
broken files as Python exceptions. decord2 (a decord fork) would also do, but decord's random
access has returned wrong frames (dmlc/decord #91, #195, #365) and it trusts the container's
declared frame count (#373); a sequential PyAV decode sees every frame exactly once, which makes
"frame i" unambiguous (docs/VIDEO.md).

Frames are preprocessed by transformers' PIL `VideoLlavaImageProcessor` (resize the short side to
224 with bicubic, center-crop 224, rescale, CLIP normalisation), frame by frame, which needs no
torchvision. docs/VIDEO.md lists how this differs from the original LanguageBind transform.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

DEFAULT_NUM_FRAMES = 8


class VideoDecodeError(ValueError):
    """A video file that cannot be read, or holds too few frames to sample."""


def sample_frame_indices(num_total: int, num_frames: int = DEFAULT_NUM_FRAMES) -> list[int]:
    """Video-LLaVA's uniform sampling: `num_frames` indices of a video of `num_total` frames, ascending."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_total < 1:
        raise ValueError(f"a video of {num_total} frames has no frames to sample")
    return np.linspace(0, num_total - 1, num_frames, dtype=int).tolist()


def _import_av():
    try:
        import av
    except ImportError:
        raise ImportError('reading videos needs PyAV: pip install "fastervlm[video]" (or pip install av)') from None
    return av


def _decode(path: str, wanted: set[int]) -> tuple[dict[int, Image.Image], int]:
    """One sequential pass: the frames at `wanted` (index -> RGB picture) and the number of frames decoded."""
    av = _import_av()
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(f"video {path}: not a readable video ({type(err).__name__}: {err})") from None
    kept: dict[int, Image.Image] = {}
    count = 0
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"video {path}: the file holds no video stream")
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                if count in wanted:
                    kept[count] = frame.to_image().convert("RGB")
                count += 1
        except (av.FFmpegError, OSError, ValueError) as err:
            raise VideoDecodeError(f"video {path}: decoding failed after {count} frames "
                                   f"({type(err).__name__}: {err})") from None
    return kept, count


def _header_frames(path: str) -> int:
    """The frame count the container declares (0 when it declares none)."""
    av = _import_av()
    try:
        with av.open(path) as container:
            return int(container.streams.video[0].frames) if container.streams.video else 0
    except (av.FFmpegError, OSError, ValueError, IndexError):
        return 0


def read_video_frames(path: str | os.PathLike, num_frames: int = DEFAULT_NUM_FRAMES) -> list[Image.Image]:
    """The `num_frames` uniformly sampled frames of a video file, as RGB pictures in time order.

    The frame count is the number of frames PyAV decodes; when the container's header declares
    another count, a second pass samples from the decoded count. Missing, empty, unreadable,
    frameless or too-short (fewer than `num_frames` frames) videos raise an error naming the file.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file {path!r} not found (check --video-folder)")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"video {path}: the file is empty (0 bytes); re-download or re-extract it")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    declared = _header_frames(path)
    plan = sample_frame_indices(declared, num_frames) if declared >= num_frames else []
    kept, total = _decode(path, set(plan))
    if total == 0:
        raise VideoDecodeError(f"video {path}: the file holds no decodable video frames")
    if total < num_frames:
        raise VideoDecodeError(f"video {path}: only {total} frames, fewer than the {num_frames} sampled "
                               f"(pass --num-frames {total} or fewer, or drop this video)")
    indices = sample_frame_indices(total, num_frames)
    if total != declared or set(indices) - set(kept):
        kept, total_again = _decode(path, set(indices))
        if total_again != total:
            raise VideoDecodeError(f"video {path}: two decodes gave {total} and {total_again} frames")
    return [kept[i] for i in indices]


def preprocess_frames(frames: Sequence[Image.Image], image_processor: Any) -> torch.Tensor:
    """Frames through the PIL image processor (`VideoLlavaImageProcessor`): -> [T, 3, S, S]."""
    if not frames:
        raise ValueError("preprocess_frames got no frames")
    out = image_processor(images=list(frames), return_tensors="pt", return_legacy_image_output=False)
    return out["pixel_values"]


def load_video(path: str | os.PathLike, image_processor: Any, num_frames: int = DEFAULT_NUM_FRAMES) -> torch.Tensor:
    """A video file as model input: `num_frames` sampled, preprocessed frames [T, 3, S, S]."""
    return preprocess_frames(read_video_frames(path, num_frames), image_processor)


def write_test_video(path: str | os.PathLike, frames: Sequence[np.ndarray], codec: str = "ffv1",
                     fps: int = 8) -> str:
    """Encode RGB uint8 frames [H, W, 3] into a video file with PyAV (tests and sample videos)."""
    av = _import_av()
    path = str(path)
    height, width = frames[0].shape[:2]
    with av.open(path, mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if codec in ("mpeg4", "libx264", "h264") else "rgb24" if codec == "png" \
            else "bgr0" if codec == "ffv1" else "yuv420p"
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
