"""Helpers shared by the video tests: the frames of the generated test videos."""

from __future__ import annotations

import numpy as np

FRAMES = 8
TOTAL = 20  # frames of the generated videos


def moving_square_frames(n: int = TOTAL, height: int = 96, width: int = 128, seed: int = 0) -> list[np.ndarray]:
    """RGB frames of a square moving left to right over a noisy background; frame i is brightness-coded."""
    gen = np.random.default_rng(seed)
    base = gen.integers(0, 80, size=(height, width, 3), dtype=np.uint8)
    frames = []
    for i in range(n):
        frame = base.copy()
        x = 4 + i * (width - 40) // max(n - 1, 1)
        frame[30:62, x:x + 32] = (200, 40 + 9 * i, 255 - 9 * i)
        frame[0:8, 0:8] = 10 * i  # the frame's index, readable back from a lossless file
        frames.append(frame)
    return frames
