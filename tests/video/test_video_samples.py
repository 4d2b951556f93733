"""The generated sample videos and their questions, the quickstart's video question at two budgets, and the
per-frame strip of kept patches (drawn cells equal the kept indices)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from llava.kept_map import draw_kept_strip, kept_frame_indices, main as kept_map_main, split_per_frame
from llava.video_io import read_video_frames
from llava.video_samples import BLUE, GREEN, RED, SAMPLES, YELLOW, write_samples

from video_helpers import FRAMES


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("video_samples"))


def _mask(frame: Image.Image, colour, tol: int = 60) -> np.ndarray:
    """Pixels within `tol` of `colour` on every channel (mpeg4 is lossy): [H, W] bool."""
    return (np.abs(np.asarray(frame, dtype=int) - np.array(colour)) < tol).all(axis=-1)


def test_the_question_files_are_video_llava_format_and_aligned(samples):
    questions = json.loads(samples["questions"].read_text())
    answers = json.loads(samples["answers"].read_text())
    assert [q["video_name"] for q in questions] == [s.name for s in SAMPLES]
    assert [set(q) for q in questions] == [{"video_name", "question", "question_id"}] * len(SAMPLES)
    assert [a["question_id"] for a in answers] == [q["question_id"] for q in questions]
    assert [a["answer"] for a in answers] == ["right", "circle", "yellow"]
    assert sorted(p.name for p in samples["videos"].iterdir()) == sorted(f"{s.name}.mp4" for s in SAMPLES)


def test_the_decoded_videos_show_what_the_answers_say(samples):
    videos = samples["videos"]
    square = read_video_frames(videos / "red_square_right.mp4", FRAMES)
    xs = [np.nonzero(_mask(f, RED))[1].mean() for f in square]
    assert all(b > a + 5 for a, b in zip(xs, xs[1:]))  # moves right in every sampled frame
    circle = read_video_frames(videos / "blue_circle_bouncing.mp4", FRAMES)
    ys = np.array([np.nonzero(_mask(f, BLUE))[0].mean() for f in circle])
    turns = int((np.diff(np.sign(np.diff(ys))) != 0).sum())
    assert turns >= 2 and ys.max() - ys.min() > 40  # down, up, down again: it bounces
    fade = read_video_frames(videos / "square_changing_colour.mp4", FRAMES)
    centre = [np.asarray(f)[60, 80].astype(int) for f in (fade[0], fade[-1])]
    assert np.abs(centre[0] - GREEN).max() < 30 and np.abs(centre[1] - YELLOW).max() < 30


def test_the_quickstart_question_at_two_budgets(samples, video_dir, tmp_path):
    from llava.cli_errors import run_main
    from llava.eval import model_video_qa

    base = ["--model-path", str(video_dir), "--question-file", str(samples["questions"]),
            "--gt-answers-file", str(samples["answers"]), "--video-folder", str(samples["videos"]),
            "--num-samples", "1", "--conv-mode", "llava_v1", "--temperature", "0", "--max_new_tokens", "2",
            "--device", "cpu"]
    for name, extra, tokens in (("full", [], FRAMES * 257), ("k26", ["--visual-token-num", "26"], FRAMES * 26)):
        out = tmp_path / f"{name}.jsonl"
        with pytest.raises(SystemExit) as done:  # the command line, as the quickstart runs it under `set -e`
            run_main(model_video_qa._cli, base + ["--answers-file", str(out), *extra])
        assert done.value.code == 0
        (record,) = [json.loads(line) for line in out.read_text().splitlines()]
        assert record["video"] == "red_square_right.mp4" and record["answer"] == "right"
        assert record["metadata"]["visual_tokens"] == tokens


def _cell_centres(strip: np.ndarray, frame: int, side: int, grid: int, gap: int) -> np.ndarray:
    """The pixel at the centre of every cell of frame `frame`: [grid * grid, 3], raster order."""
    step = side / grid
    centres = [(int((r + 0.5) * step), frame * (side + gap) + int((c + 0.5) * step))
               for r in range(grid) for c in range(grid)]
    return np.stack([strip[y, x] for y, x in centres])


def test_strip_cells_are_bright_exactly_where_kept():
    grid, side, gap, frames = 16, 224, 4, 3
    gen = torch.Generator().manual_seed(0)
    kept = [torch.randperm(grid * grid, generator=gen)[:20].sort().values for _ in range(frames - 1)] + [None]
    views = [Image.new("RGB", (side, side), (200, 160, 120)) for _ in range(frames)]
    strip = np.asarray(draw_kept_strip(views, kept, grid, dim=0.25, gap=gap))
    assert strip.shape == (side, frames * side + (frames - 1) * gap, 3)
    for f, keep in enumerate(kept):
        cells = _cell_centres(strip, f, side, grid, gap)
        want = set(range(grid * grid)) if keep is None else set(keep.tolist())
        bright = {i for i, px in enumerate(cells) if tuple(px) == (200, 160, 120)}
        # dimmed: mask 255 * 0.25 = 63, and PIL rounds v * 63 / 255
        dimmed = {i for i, px in enumerate(cells) if tuple(px) == (49, 40, 30)}
        assert bright == want and dimmed == set(range(grid * grid)) - want
    assert (strip[:, side:side + gap] == 255).all()  # the white gap between frames
    with pytest.raises(ValueError, match="3 frames but kept indices for 2"):
        draw_kept_strip(views, kept[:2], grid)


def test_temporal_indices_split_per_frame():
    flat = torch.tensor([3, 256 + 0, 256 + 255, 2 * 256 + 7, 5])
    assert split_per_frame(flat, 3, 256) == [[3, 5], [0, 255], [7]]
    assert split_per_frame(torch.tensor([[1, 4], [0, 2]]), 2, 256) == [[1, 4], [0, 2]]
    assert split_per_frame(None, 2, 256) == [None, None]


def test_the_strip_of_a_video_draws_the_model_s_kept_indices(video_llava, clips):
    model = video_llava[1]
    tower = model.get_video_tower()
    per_frame = kept_frame_indices(model, clips[0], 13, "fastervlm")
    encoded = model.encode_videos(clips[0][None], 13, pruning=None)  # the model's default method: fastervlm
    assert per_frame == encoded.kept_indices[0].tolist() and [len(x) for x in per_frame] == [13] * FRAMES
    views = [Image.new("RGB", (224, 224), (90, 200, 40)) for _ in range(FRAMES)]
    strip = np.asarray(draw_kept_strip(views, per_frame, tower.num_patches_per_side))
    for f, keep in enumerate(per_frame):
        cells = _cell_centres(strip, f, 224, 16, 4)
        assert {i for i, px in enumerate(cells) if tuple(px) == (90, 200, 40)} == set(keep)
    joint = kept_frame_indices(model, clips[0], 13, "fastervlm", video_mode="temporal")
    assert sum(map(len, joint)) == FRAMES * 13 and all(max(x, default=0) < 256 for x in joint)


def test_kept_map_cli_draws_one_strip_per_budget(samples, video_dir, tmp_path, capsys):
    out = tmp_path / "strip.png"
    kept_map_main(["--model-path", str(video_dir), "--video-file", str(samples["videos"] / "red_square_right.mp4"),
                   "--visual-token-num", "26,256", "--device", "cpu", "--out", str(out)])
    assert capsys.readouterr().out.endswith(f"kept-patch strips written to {out} (random weights: see the note "
                                            "in the picture)\n")
    sheet = Image.open(out)
    strip_w = FRAMES * 224 + (FRAMES - 1) * 4
    assert sheet.size == (strip_w + 16, 8 + 2 * 24 + 2 * (24 + 224 + 8) + 8)  # title, note, two strips
    with pytest.raises(ValueError, match="give one of --image-file"):
        kept_map_main(["--model-path", str(video_dir), "--out", str(out)])
    with pytest.raises(FileNotFoundError, match="video file .*nowhere.mp4 not found"):
        kept_map_main(["--model-path", str(video_dir), "--video-file", str(tmp_path / "nowhere.mp4"),
                       "--out", str(out)])
