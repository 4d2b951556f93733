"""A mini data root for trying the benchmark scripts on the tiny model: 2-4 questions per benchmark.

    python -m llava.eval.make_mini_data --out playground/data/eval
    python -m llava.model.tiny --out playground/tiny
    CKPT=playground/tiny/llava-v1.5-tiny DEVICE=cpu MAX_NEW_TOKENS=8 bash scripts/v1_5/eval/pope.sh 58

It writes, in LLaVA's playground/data/eval layout (the one `llava.eval.prepare_hf` writes), a question
file, images and a minimal ground-truth file in each format the scorers read, for every benchmark of
scripts/v1_5/eval and scripts/v1_6/eval. The images are the bundled samples (assets/samples). The
tiny model's weights are random, so its scores mean nothing: this checks that a script runs end to end.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
MARKER = "MINI_DATA.txt"
MARKER_TEXT = ("Written by `python -m llava.eval.make_mini_data`: a few questions per benchmark for trying the scripts "
               "on the tiny model. Not benchmark data; rerunning the command rewrites this folder.\n")
SHORT = "\nAnswer the question using a single word or phrase."
LETTER = "\nAnswer with the option's letter from the given choices directly."


def _png(path: Path, n: int, samples: Path) -> None:
    """Sample picture n (cycling over the bundled samples), saved in the format its file name says."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    files = _sample_files(samples)
    with Image.open(files[n % len(files)]) as image:
        image.convert("RGB").save(path)


def _png_bytes(n: int, samples: Path) -> bytes:
    """Sample picture n as PNG bytes (MMBench's TSVs embed their images)."""
    return _sample_files(samples)[n % len(_sample_files(samples))].read_bytes()


def _sample_files(samples: Path) -> list[Path]:
    files = sorted(Path(samples).glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no sample images (*.png) in {samples}; pass --samples DIR, or recreate them "
                                f"with: python scripts/make_sample_data.py")
    return files


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")


def build_pope(root: Path, samples: Path) -> int:
    d = root / "pope"
    questions, labels = [], {}
    rows = [("adversarial", "a.png", "Is there a dog in the image?", "no"),
            ("adversarial", "b.png", "Is there a square in the image?", "yes"),
            ("random", "a.png", "Is there a car in the image?", "no"),
            ("random", "b.png", "Is there a stripe in the image?", "yes")]
    for n, (cat, image, text, label) in enumerate(rows):
        _png(d / "val2014" / image, ord(image[0]) - ord("a"), samples)
        pos = len(labels.setdefault(cat, [])) + 1
        labels[cat].append({"question_id": pos, "image": image, "text": text, "label": label})
        offset = {"adversarial": 0, "random": 10_000_000}[cat]
        questions.append({"question_id": offset + pos, "image": image, "text": text + SHORT, "category": cat})
    _jsonl(d / "llava_pope_test.jsonl", questions)
    for cat, rows_ in labels.items():
        _jsonl(d / "labels" / f"coco_pope_{cat}.json", rows_)
    return len(questions)


def build_mme(root: Path, samples: Path) -> int:
    d = root / "MME"
    questions, gt = [], [["category", "image", "question", "answer"]]
    for n, (cat, image) in enumerate([("existence", "e1.png"), ("count", "c1.png")]):
        _png(d / "MME_Benchmark_release_version" / cat / image, n, samples)
        for question, answer in [(f"Is there a red object in picture {n}?", "Yes"),
                                 (f"Is there a unicorn in picture {n}?", "No")]:
            questions.append({"question_id": f"{cat}/{image}", "image": f"{cat}/{image}", "text": question + SHORT,
                              "category": cat})
            gt.append([cat, image, question + " Please answer yes or no.", answer])
    _jsonl(d / "llava_mme.jsonl", questions)
    (d / "ground_truth.tsv").write_text("".join("\t".join(r) + "\n" for r in gt), encoding="utf-8")
    return len(questions)


def build_textvqa(root: Path, samples: Path) -> int:
    d = root / "textvqa"
    questions, data = [], []
    # two questions about the same image share the question_id (the image id), as in LLaVA's file
    for image_id, question, answers in [("t1", "What is written on the sign?", ["stop"] * 10),
                                        ("t1", "What color is the sign?", ["red"] * 7 + ["orange"] * 3),
                                        ("t2", "What brand is it?", ["acme"] * 10)]:
        _png(d / "train_images" / f"{image_id}.jpg", int(image_id[1]), samples)
        questions.append({"question_id": image_id, "image": f"{image_id}.jpg",
                          "text": f"{question}\nReference OCR token: STOP, ACME{SHORT}", "category": "default"})
        data.append({"image_id": image_id, "question": question, "answers": answers})
    _jsonl(d / "llava_textvqa_val_v051_ocr.jsonl", questions)
    _json(d / "TextVQA_0.5.1_val.json", {"dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data})
    return len(questions)


def build_gqa(root: Path, samples: Path) -> int:
    d = root / "gqa"
    questions, gt = [], {}
    for n, (qid, question, answer) in enumerate([("201", "Is the square red?", "yes"),
                                                 ("202", "What shape is it?", "square"),
                                                 ("203", "Are there stripes?", "yes")]):
        image = f"n{n % 2}"
        _png(d / "data" / "images" / f"{image}.jpg", n % 2, samples)
        questions.append({"question_id": qid, "image": f"{image}.jpg", "text": question + SHORT, "category": "default"})
        gt[qid] = {"imageId": image, "question": question, "answer": answer, "isBalanced": True}
    _jsonl(d / "llava_gqa_testdev_balanced.jsonl", questions)
    _json(d / "data" / "testdev_balanced_questions.json", gt)
    return len(questions)


def build_vqav2(root: Path, samples: Path) -> int:
    d = root / "vqav2"
    questions = []
    for n in range(3):
        image = f"COCO_test2015_{n:012d}.jpg"
        _png(d / "test2015" / image, n, samples)
        questions.append({"question_id": 1000 + n, "image": image, "text": f"What color is object {n}?{SHORT}",
                          "category": "default"})
    _jsonl(d / "llava_vqav2_mscoco_test-dev2015.jsonl", questions)
    return len(questions)


def build_vizwiz(root: Path, samples: Path) -> int:
    d = root / "vizwiz"
    questions = []
    for n in range(3):
        image = f"VizWiz_test_{n:08d}.jpg"
        _png(d / "test" / image, n, samples)
        questions.append({"question_id": n, "image": image, "text": "What is this?\nWhen the provided information is "
                          f"insufficient, respond with 'Unanswerable'.{SHORT}", "category": "default"})
    _jsonl(d / "llava_test.jsonl", questions)
    return len(questions)


def build_seed(root: Path, samples: Path) -> int:
    d = root / "seed_bench"
    questions, annotation = [], []
    rows = [("101", "SEED-Bench-image/101.png", 1, "image", "A"), ("102", "SEED-Bench-image/102.png", 5, "image", "B"),
            ("v7", "SEED-Bench-video-image/10_v7.png", 10, "video", "C")]
    for n, (qid, image, type_id, data_type, answer) in enumerate(rows):
        _png(d / image, n, samples)
        text = f"What is shown?\nA. a square\nB. a circle\nC. a dog\nD. a car{LETTER}"
        questions.append({"question_id": int(qid) if qid.isdigit() else qid, "image": image, "text": text,
                          "category": str(type_id)})
        annotation.append({"question_id": qid, "question_type_id": type_id, "data_type": data_type, "answer": answer})
    _jsonl(d / "llava-seed-bench.jsonl", questions)
    _json(d / "SEED-Bench.json", {"question_type": {"Scene Understanding": 1, "Instances Counting": 5,
                                                    "Action Recognition": 10}, "questions": annotation})
    return len(questions)


def build_scienceqa(root: Path, samples: Path) -> tuple[int, int]:
    """Two image problems and one text-only problem; returns (questions, questions with an image)."""
    d = root / "scienceqa"
    items, problems = [], {}
    rows = [("11", True, "Which color is the square?", ["red", "blue"], 0),
            ("12", False, "Which is a mammal?", ["trout", "whale", "frog"], 1),
            ("13", True, "Context: Look at the picture.\nWhat pattern is in the background?", ["stripes", "dots"], 0)]
    for n, (pid, has_image, question, choices, answer) in enumerate(rows):
        human = question + "\n" + "\n".join(f"{'ABCDE'[i]}. {c}" for i, c in enumerate(choices))
        item = {"id": pid}
        if has_image:
            _png(d / "images" / "test" / pid / "image.png", n, samples)
            item["image"] = f"{pid}/image.png"
            human = "<image>\n" + human
        item["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": "ABCDE"[answer]}]
        items.append(item)
        problems[pid] = {"question": question, "choices": choices, "answer": answer, "image": "image.png" if has_image
                         else None, "split": "test"}
    _json(d / "llava_test_CQM-A.json", items)
    _json(d / "problems.json", problems)
    _json(d / "pid_splits.json", {"test": [r[0] for r in rows]})
    return len(items), sum(r[1] for r in rows)


def build_mmbench(root: Path, samples: Path, folder: str, stem: str, cn: bool) -> int:
    """An MMBench TSV: a 3-option question with its circular copy (index + 1,000,000) and a 2-option one."""
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image", "source",
              "l2-category", "split"]
    q = ("图中是什么形状?" if cn else "What shape is shown?")
    first, second = _png_bytes(0, samples), _png_bytes(1, samples)
    rows = [[0, q, "", "square", "circle", "triangle", "", "A", "shape", first, "mini", "perception", "dev"],
            [1_000_000, q, "", "circle", "triangle", "square", "", "C", "shape", first, "mini", "perception", "dev"],
            [1, "Which color dominates?", "The picture is small.", "red", "green", "", "", "B", "color",
             second, "mini", "perception", "dev"]]
    with (d / f"{stem}.tsv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(header)
        for row in rows:
            row[9] = base64.b64encode(row[9]).decode("ascii")
            writer.writerow(row)
    return len(rows)


def build_mmvet(root: Path, samples: Path) -> int:
    d = root / "mm-vet"
    questions, gt = [], {}
    for n in range(2):
        _png(d / "images" / f"v1_{n}.png", n, samples)
        questions.append({"image": f"v1_{n}.png", "text": f"Describe object {n}.", "category": "conv", "question_id": n})
        gt[f"v1_{n}"] = {"imagename": f"v1_{n}.png", "capability": ["rec"], "question": f"Describe object {n}.",
                         "answer": "a square"}
    _jsonl(d / "llava-mm-vet.jsonl", questions)
    _json(d / "mm-vet.json", gt)
    return len(questions)


def build_llavabench(root: Path, samples: Path) -> int:
    d = root / "llava-bench-in-the-wild"
    questions, context, answers = [], [], []
    for n, category in enumerate(["conv", "detail", "complex"]):
        image = f"{n // 2 + 1:03d}.jpg"
        _png(d / "images" / image, n // 2, samples)
        questions.append({"question_id": n, "image": image, "text": f"Tell me about picture {n}.", "category": category})
        answers.append({"question_id": n, "prompt": f"Tell me about picture {n}.", "text": "A coloured square.",
                        "answer_id": f"gpt{n}", "model_id": "gpt-4", "metadata": {}})
        if n % 2 == 0:
            context.append({"id": image[:3], "image": image, "caption": "A square on stripes."})
    _jsonl(d / "questions.jsonl", questions)
    _jsonl(d / "context.jsonl", context)
    _jsonl(d / "answers_gpt4.jsonl", answers)
    _json(d / "rule.json", {f"llava_bench_{c}": {"role": "Assistant", "prompt": "Rate both answers from 1 to 10."}
                            for c in ("conv", "detail", "complex")})
    return len(questions)


def build_data_root(root: Path, samples: Path = SAMPLES) -> dict[str, int]:
    """Every benchmark's mini data under `root`; returns the number of questions (answer lines) per script.

    Refuses a `root` that already holds files this function did not write (real benchmark data).
    """
    root = Path(root)
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).is_file():
        raise FileExistsError(f"{root} already holds files that make_mini_data did not write (real benchmark data?); "
                              f"pick an empty or new folder with --out")
    _sample_files(samples)
    sqa, _ = build_scienceqa(root, samples)
    counts = {
        "pope": build_pope(root, samples), "mme": build_mme(root, samples), "textvqa": build_textvqa(root, samples),
        "gqa": build_gqa(root, samples), "vqav2": build_vqav2(root, samples), "vizwiz": build_vizwiz(root, samples),
        "seed": build_seed(root, samples), "sqa": sqa,
        "mmbench": build_mmbench(root, samples, "mmbench", "mmbench_dev_20230712", cn=False),
        "mmbench_cn": build_mmbench(root, samples, "mmbench_cn", "mmbench_dev_cn_20231003", cn=True),
        "mmvet": build_mmvet(root, samples), "llavabench": build_llavabench(root, samples),
    }
    (root / MARKER).write_text(MARKER_TEXT, encoding="utf-8")
    return counts


def main(argv: list[str] | None = None) -> int:
    """Write the mini data root and say how to run one script on it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="playground/data/eval",
                        help="data root to write (default: %(default)s, the scripts' DATA_ROOT)")
    parser.add_argument("--samples", default=str(SAMPLES), help="folder of *.png pictures to use (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        counts = build_data_root(Path(args.out), Path(args.samples))
    except (FileExistsError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"wrote {len(counts)} benchmarks, {sum(counts.values())} questions, to {args.out}")
    print("try one script on the tiny random-weight model (its scores mean nothing):")
    print("  python -m llava.model.tiny --out playground/tiny")
    data_root = "" if args.out == "playground/data/eval" else f"DATA_ROOT={args.out} "
    print(f"  {data_root}CKPT=playground/tiny/llava-v1.5-tiny DEVICE=cpu MAX_NEW_TOKENS=8 "
          f"bash scripts/v1_5/eval/pope.sh 58")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
