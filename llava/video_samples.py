"""Generated sample videos of moving shapes, with a question file in Video-LLaVA's zero-shot QA format.

`python -m llava.video_samples --out DIR` writes, without any download:
- DIR/videos/<name>.mp4   short clips encoded with PyAV (mpeg4), one per entry of `SAMPLES`;
- DIR/test_q.json         [{video_name, question, question_id}], what `model_video_qa --question-file` reads;
- DIR/test_a.json         [{answer, question_id}], aligned by position (`--gt-answers-file`).

Each clip is drawn frame by frame from a few integers (no randomness), so the ground truth is known
by construction: where the red square goes, which shape bounces, which colour the square turns.
No video file is committed; the quickstart and the tests generate them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

WIDTH, HEIGHT = 160, 120  # a 4:3 clip: the processor resizes the short side to 224 and crops the centre
NUM_FRAMES = 24
FPS = 8
BACKGROUND = (128, 128, 128)
RED, BLUE, GREEN, YELLOW = (220, 30, 30), (30, 60, 220), (30, 180, 60), (240, 220, 20)


def _canvas() -> np.ndarray:
    """An empty grey frame [H, W, 3] uint8."""
    frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame[:] = BACKGROUND
    return frame


def red_square_right(n: int = NUM_FRAMES) -> list[np.ndarray]:
    """A 32-pixel red square sliding from the left edge to the right edge, at mid height."""
    frames, side = [], 32
    for i in range(n):
        frame = _canvas()
        x = 8 + i * (WIDTH - side - 16) // max(n - 1, 1)
        frame[44:44 + side, x:x + side] = RED
        frames.append(frame)
    return frames


def blue_circle_bouncing(n: int = NUM_FRAMES) -> list[np.ndarray]:
    """A blue disc of radius 14 falling to the floor and bouncing back up, twice, at the centre column."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames, radius = [], 14
    top, floor = radius + 4, HEIGHT - radius - 4
    for i in range(n):
        phase = abs(((2 * i / max(n - 1, 1)) * 2) % 2 - 1)  # 1 -> 0 -> 1 -> 0 -> 1: high, low, high, ...
        cy = round(floor - phase * (floor - top))
        frame = _canvas()
        frame[(yy - cy) ** 2 + (xx - WIDTH // 2) ** 2 <= radius**2] = BLUE
        frames.append(frame)
    return frames


def square_changing_colour(n: int = NUM_FRAMES) -> list[np.ndarray]:
    """A still 48-pixel square at the centre that fades from green to yellow."""
    frames, side = [], 48
    top, left = (HEIGHT - side) // 2, (WIDTH - side) // 2
    for i in range(n):
        t = i / max(n - 1, 1)
        colour = tuple(round((1 - t) * g + t * y) for g, y in zip(GREEN, YELLOW))
        frame = _canvas()
        frame[top:top + side, left:left + side] = colour
        frames.append(frame)
    return frames


@dataclass(frozen=True)
class Sample:
    """One generated clip and its question with the answer known by construction."""

    name: str
    draw: Callable[[], list[np.ndarray]]
    question: str
    answer: str


SAMPLES = (
    Sample("red_square_right", red_square_right, "Which direction does the red square move?", "right"),
    Sample("blue_circle_bouncing", blue_circle_bouncing, "What shape is bouncing in the video?", "circle"),
    Sample("square_changing_colour", square_changing_colour,
           "What colour is the square at the end of the video?", "yellow"),
)


def write_samples(out: str | Path, samples: tuple[Sample, ...] = SAMPLES, codec: str = "mpeg4") -> dict[str, Path]:
    """Encode every sample into out/videos/<name>.mp4 and write test_q.json / test_a.json; returns their paths."""
    from llava.video_io import write_test_video

    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    questions, answers = [], []
    for sample in samples:
        write_test_video(videos / f"{sample.name}.mp4", sample.draw(), codec=codec, fps=FPS)
        qid = f"{sample.name}_0"
        questions.append({"video_name": sample.name, "question": sample.question, "question_id": qid})
        answers.append({"answer": sample.answer, "question_id": qid})
    (out / "test_q.json").write_text(json.dumps(questions, indent=1) + "\n", encoding="utf-8")
    (out / "test_a.json").write_text(json.dumps(answers, indent=1) + "\n", encoding="utf-8")
    return {"videos": videos, "questions": out / "test_q.json", "answers": out / "test_a.json"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/video_samples", help="output folder (outputs/ is not committed)")
    args = parser.parse_args(argv)
    paths = write_samples(args.out)
    print(f"wrote {len(SAMPLES)} sample videos to {paths['videos']}, questions {paths['questions']}, "
          f"answers {paths['answers']}")


if __name__ == "__main__":
    main()
