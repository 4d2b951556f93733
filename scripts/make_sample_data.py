"""Generate the bundled sample images and question file (no downloads): assets/samples/ and
playground/data/sample/questions.jsonl. Deterministic; rerun to recreate them."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]


def shapes(size=(480, 320)) -> Image.Image:
    img = Image.new("RGB", size, (70, 130, 180))
    d = ImageDraw.Draw(img)
    d.ellipse([40, 60, 200, 220], fill=(220, 40, 40))
    d.rectangle([260, 90, 420, 250], fill=(250, 210, 40))
    d.polygon([(330, 20), (380, 80), (280, 80)], fill=(40, 170, 80))
    return img


def stripes(size=(300, 420)) -> Image.Image:
    img = Image.new("RGB", size, (245, 245, 245))
    d = ImageDraw.Draw(img)
    for i, y in enumerate(range(0, size[1], 30)):
        d.rectangle([0, y, size[0], y + 14], fill=(30 + 20 * (i % 5), 60, 200 - 15 * (i % 7)))
    d.text((20, size[1] // 2), "STOP 42", fill=(0, 0, 0))
    return img


def scene(size=(400, 400)) -> Image.Image:
    img = Image.new("RGB", size, (135, 206, 235))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 280, 400, 400], fill=(60, 160, 60))
    d.ellipse([300, 30, 370, 100], fill=(255, 230, 0))
    d.rectangle([90, 180, 230, 300], fill=(150, 75, 0))
    d.polygon([(70, 180), (160, 110), (250, 180)], fill=(180, 30, 30))
    return img


SAMPLES = {
    "shapes.png": (shapes, "What shapes are in the image?"),
    "stripes.png": (stripes, "What does the text say? Answer the question using a single word or phrase."),
    "scene.png": (scene, "Is there a house in the image? Answer the question using a single word or phrase."),
}


def main() -> None:
    img_dir = ROOT / "assets" / "samples"
    q_dir = ROOT / "playground" / "data" / "sample"
    img_dir.mkdir(parents=True, exist_ok=True)
    q_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for n, (name, (make, question)) in enumerate(SAMPLES.items()):
        make().save(img_dir / name, optimize=True)
        lines.append({"question_id": n, "image": name, "text": question, "category": "sample"})
    (q_dir / "questions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    print(f"wrote {len(lines)} samples to {img_dir} and {q_dir / 'questions.jsonl'}")


if __name__ == "__main__":
    main()
