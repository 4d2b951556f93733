"""Data shared by the analysis tests (imported by name: tests/analysis is on sys.path under pytest)."""

from __future__ import annotations

import json
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"

# id, image, first human turn: one <image> first, one <image> last, one missing file, one text-only record.
RECORDS = [
    {"id": "s1", "image": "shapes.png",
     "conversations": [{"from": "human", "value": "<image>\nWhat shapes are in the image?"},
                       {"from": "gpt", "value": "A circle."}, {"from": "human", "value": "Any more?"}]},
    {"id": "gone", "image": "not_there.png",
     "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "?"}]},
    {"id": "s2", "image": "scene.png",
     "conversations": [{"from": "human", "value": "Describe the scene in a few words.\n<image>"},
                       {"from": "gpt", "value": "A house."}]},
    {"id": "text-only",
     "conversations": [{"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi."}]},
]
MEASURED = ["s1", "s2"]


def write_mini_jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    return path


def run_args(tiny_path, mini_data, out, *extra) -> list[str]:
    return ["--model-path", tiny_path, "--data-file", str(mini_data), "--image-folder", str(SAMPLES),
            "--output-dir", str(out), "--device", "cpu", "--torch-dtype", "float32", *extra]
