"""prepare_hf: tiny local datasets in the lmms-lab schemas -> exact LLaVA-format files, read by our scorers.

The fake datasets are written the way `datasets` writes them (`save_to_disk`, parquet files, a builder's
prepared cache), and read back through `datasets`' own resolution (`load_from_disk`, `load_dataset` on a
folder, `load_dataset(hub_id)` in offline mode), as `python -m llava.eval.prepare_hf` runs it.
"""

from __future__ import annotations

import base64
import collections
import io
import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

datasets = pytest.importorskip("datasets")
from datasets import Dataset, DatasetDict, Features, Image, Sequence, Value  # noqa: E402

from llava.eval import eval_gqa, eval_mme, eval_pope, eval_science_qa, eval_textvqa  # noqa: E402
from llava.eval import catalogue, prepare_hf  # noqa: E402
from llava.eval.io_utils import read_json, read_jsonl, write_jsonl  # noqa: E402

SHORT = "\nAnswer the question using a single word or phrase."


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """What HF_DATASETS_OFFLINE=1 gives when set before `datasets` is imported (prepare_hf's main sets it)."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)


def img(color: int, fmt: str = "PNG") -> dict:
    """A tiny encoded image as the `datasets` Image storage dict."""
    buf = io.BytesIO()
    PILImage.new("RGB", (4, 3), (color, 255 - color, 7)).save(buf, format=fmt)
    return {"bytes": buf.getvalue(), "path": None}


def save(root: Path, columns: dict, features: dict, split: str | None = None) -> Path:
    """`Dataset.from_dict(...).save_to_disk(root)`, as a DatasetDict when `split` is given."""
    ds = Dataset.from_dict(columns, features=Features(features))
    (DatasetDict({split: ds}) if split else ds).save_to_disk(str(root))
    return root


def run(bench: str, dataset: Path | str, out: Path, *extra: str) -> dict:
    return prepare_hf.main(["--benchmark", bench, "--dataset", str(dataset), "--out-dir", str(out), "--no-progress",
                            *extra])


def lines(path: Path) -> list[dict]:
    return read_jsonl(path)


# ----------------------------------------------------------------------------- POPE

POPE_FEATURES = {"id": Value("string"), "question_id": Value("string"), "question": Value("string"),
                 "answer": Value("string"), "image_source": Value("string"), "image": Image(),
                 "category": Value("string")}
POPE_IMAGES = [img(10, "JPEG"), img(200, "JPEG")]
POPE_ROWS = {
    "id": ["a", "b", "c", "d", "e"],
    "question_id": ["1", "2", "1", "1", "2"],
    "question": ["Is there a dog in the image?", "Is there a car in the image?", "Is there a dog in the image?",
                 "Is there a cup in the image?", "Is there a car in the image?"],
    "answer": ["yes", "no", "Yes", "no", "no"],
    "image_source": ["COCO_val2014_000000000001", "COCO_val2014_000000000001", "COCO_val2014_000000000001",
                     "COCO_val2014_000000000002", "COCO_val2014_000000000001"],
    "image": [POPE_IMAGES[0], POPE_IMAGES[0], POPE_IMAGES[0], POPE_IMAGES[1], POPE_IMAGES[0]],
    "category": ["adversarial", "adversarial", "random", "popular", "random"],
}


def check_pope_outputs(out: Path) -> None:
    img1, img2 = "COCO_val2014_000000000001.jpg", "COCO_val2014_000000000002.jpg"
    assert lines(out / "llava_pope_test.jsonl") == [
        {"question_id": 1, "image": img1, "text": "Is there a dog in the image?" + SHORT, "category": "adversarial"},
        {"question_id": 2, "image": img1, "text": "Is there a car in the image?" + SHORT, "category": "adversarial"},
        {"question_id": 10000001, "image": img1, "text": "Is there a dog in the image?" + SHORT, "category": "random"},
        {"question_id": 20000001, "image": img2, "text": "Is there a cup in the image?" + SHORT, "category": "popular"},
        {"question_id": 10000002, "image": img1, "text": "Is there a car in the image?" + SHORT, "category": "random"},
    ]
    assert lines(out / "labels" / "coco_pope_random.json") == [
        {"question_id": 1, "image": img1, "text": "Is there a dog in the image?", "label": "yes"},
        {"question_id": 2, "image": img1, "text": "Is there a car in the image?", "label": "no"},
    ]
    assert [r["label"] for r in lines(out / "labels" / "coco_pope_adversarial.json")] == ["yes", "no"]
    assert [r["label"] for r in lines(out / "labels" / "coco_pope_popular.json")] == ["no"]
    assert (out / "val2014" / img1).read_bytes() == POPE_IMAGES[0]["bytes"]  # original bytes, not re-encoded
    assert (out / "val2014" / img2).read_bytes() == POPE_IMAGES[1]["bytes"]
    assert sorted(p.name for p in (out / "val2014").iterdir()) == [img1, img2]


def test_pope_save_to_disk_and_scorer(tmp_path):
    data = save(tmp_path / "POPE", POPE_ROWS, POPE_FEATURES, split="test")
    out = tmp_path / "pope"
    info = run("pope", data, out)
    check_pope_outputs(out)
    assert info["counts"] == {"questions": 5, "questions_adversarial": 2, "questions_random": 2, "questions_popular": 1}
    assert info["images"] == {"written": 2, "unchanged": 0}
    assert read_json(out / prepare_hf.INFO_FILE)["files"]["question_file"] == str(out / "llava_pope_test.jsonl")

    # the scorer reads the files as they are: every answer "Yes" -> precision = share of "yes" labels
    write_jsonl(tmp_path / "ans.jsonl", [{"question_id": q["question_id"], "prompt": q["text"], "text": "Yes"}
                                         for q in lines(out / "llava_pope_test.jsonl")])
    result = eval_pope.evaluate_pope(out / "labels", out / "llava_pope_test.jsonl", tmp_path / "ans.jsonl")
    assert {c: (m["tp"], m["fp"]) for c, m in result["categories"].items()} == {
        "adversarial": (1, 1), "popular": (0, 1), "random": (1, 1)}

    # a second run rewrites nothing (resume-friendly) and produces the same files
    again = run("pope", data, out)
    assert again["images"] == {"written": 0, "unchanged": 2}
    check_pope_outputs(out)


def test_pope_from_parquet_hub_layout(tmp_path):
    repo = tmp_path / "POPE"
    (repo / "data").mkdir(parents=True)
    Dataset.from_dict(POPE_ROWS, features=Features(POPE_FEATURES)).to_parquet(
        str(repo / "data" / "test-00000-of-00001.parquet"))
    run("pope", repo, tmp_path / "pope")
    check_pope_outputs(tmp_path / "pope")
    info = run("pope", repo, tmp_path / "smoke", "--limit", "2")
    assert [q["question_id"] for q in lines(tmp_path / "smoke" / "llava_pope_test.jsonl")] == [1, 2]
    assert info["counts"]["questions"] == 2 and info["limit"] == 2


def test_hub_id_from_local_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "datasets--lmms-lab--POPE" / "snapshots" / "abc123"
    (snapshot / "data").mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc123")
    Dataset.from_dict(POPE_ROWS, features=Features(POPE_FEATURES)).to_parquet(
        str(snapshot / "data" / "test-00000-of-00001.parquet"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    run("pope", "lmms-lab/POPE", tmp_path / "pope")
    check_pope_outputs(tmp_path / "pope")


def cache_like_load_dataset(tmp_path: Path, cache: Path) -> None:
    """The prepared copy an online `load_dataset("lmms-lab/POPE")` leaves in `cache`: the hub flow runs the
    parquet builder on the repo's parquet files and keeps the result in <owner>___<name>/<config>/<version>/<hash>
    with <name>-<split>.arrow files; here the same builder runs on a local parquet file."""
    import shutil

    parquet = tmp_path / "repo" / "test-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True)
    Dataset.from_dict(POPE_ROWS, features=Features(POPE_FEATURES)).to_parquet(str(parquet))
    builder = datasets.load_dataset_builder("parquet", data_files={"test": str(parquet)}, cache_dir=str(tmp_path / "b"))
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)  # .../parquet/default-<id>/0.0.0/<hash>
    dest = cache / "lmms-lab___pope" / "default" / prepared.parent.name / prepared.name
    dest.parent.mkdir(parents=True)
    shutil.move(str(prepared), dest)
    (dest / "parquet-test.arrow").rename(dest / "pope-test.arrow")


def test_hub_id_from_datasets_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache_like_load_dataset(tmp_path, tmp_path / "ds_cache")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    info = run("pope", "lmms-lab/POPE", tmp_path / "pope", "--cache-dir", str(tmp_path / "ds_cache"))
    check_pope_outputs(tmp_path / "pope")
    assert info["counts"]["questions"] == 5
    with pytest.raises(prepare_hf.DatasetNotAvailable, match=r"config en.*Couldn't find cache for lmms-lab/POPE"):
        run("pope", "lmms-lab/POPE", tmp_path / "x", "--cache-dir", str(tmp_path / "ds_cache"), "--config", "en")


def test_hub_id_needs_offline_mode(tmp_path, monkeypatch):
    """With datasets imported online, a hub id is refused rather than risk a download."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with pytest.raises(RuntimeError, match=r"lmms-lab/POPE: datasets is not in offline mode.*HF_DATASETS_OFFLINE=1"):
        run("pope", "lmms-lab/POPE", tmp_path / "out", "--cache-dir", str(tmp_path / "ds_cache"))


def test_hub_id_not_available_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(prepare_hf.DatasetNotAvailable, match=r"lmms-lab/NoSuchSet .*not available offline.*"
                                                             r"huggingface-cli download lmms-lab/NoSuchSet"):
        run("pope", "lmms-lab/NoSuchSet", tmp_path / "out", "--cache-dir", str(tmp_path / "ds_cache"))


def test_errors_name_the_problem(tmp_path):
    no_image = {k: v for k, v in POPE_ROWS.items() if k != "image"}
    data = save(tmp_path / "bad", no_image, {k: v for k, v in POPE_FEATURES.items() if k != "image"}, split="test")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['image'\].*lmms-lab POPE layout"):
        run("pope", data, tmp_path / "out")
    with pytest.raises(ValueError, match=r"split 'val' not in .*\['test'\]"):
        run("pope", data, tmp_path / "out", "--split", "val")
    with pytest.raises(ValueError, match="unknown benchmark 'popex'"):
        run("popex", data, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="not a hub id"):
        run("pope", tmp_path / "missing" / "folder", tmp_path / "out")


# ----------------------------------------------------------------------------- MME


def test_mme_pairs_gt_tsv_and_scorer(tmp_path):
    a, b = img(1), img(2, "JPEG")
    data = save(tmp_path / "MME", {
        "question_id": ["color/000000001.jpg", "posters/images/tt01.jpg", "color/000000001.jpg",
                        "posters/images/tt01.jpg"],
        "image": [a, b, a, b],
        "question": ["Is the car red? Please answer yes or no.", "Is this movie from 1999? Please answer yes or no.",
                     "Is the car blue?  Please answer yes or no.", "Is the title \"Up\"? Please answer yes or no."],
        "answer": ["Yes", "No", "No", "Yes"],
        "category": ["color", "posters", "color", "posters"],
    }, {"question_id": Value("string"), "image": Image(), "question": Value("string"), "answer": Value("string"),
        "category": Value("string")}, split="test")
    out = tmp_path / "MME"
    run("mme", data, out / "x")  # a first run elsewhere, to show the layout does not depend on out-dir contents
    run("mme", data, out)
    assert lines(out / "llava_mme.jsonl") == [  # each image's two questions are adjacent
        {"question_id": "color/000000001.jpg", "image": "color/000000001.jpg", "text": "Is the car red?" + SHORT,
         "category": "color"},
        {"question_id": "color/000000001.jpg", "image": "color/000000001.jpg", "text": "Is the car blue?" + SHORT,
         "category": "color"},
        {"question_id": "posters/images/tt01.jpg", "image": "posters/images/tt01.jpg",
         "text": "Is this movie from 1999?" + SHORT, "category": "posters"},
        {"question_id": "posters/images/tt01.jpg", "image": "posters/images/tt01.jpg",
         "text": 'Is the title "Up"?' + SHORT, "category": "posters"},
    ]
    assert (out / "ground_truth.tsv").read_text(encoding="utf-8") == (
        "category\timage\tquestion\tanswer\n"
        "color\t000000001.jpg\tIs the car red? Please answer yes or no.\tYes\n"
        "color\t000000001.jpg\tIs the car blue?  Please answer yes or no.\tNo\n"
        "posters\ttt01.jpg\tIs this movie from 1999? Please answer yes or no.\tNo\n"
        'posters\ttt01.jpg\tIs the title "Up"? Please answer yes or no.\tYes\n'  # no CSV quoting: plain split
    )
    root = out / "MME_Benchmark_release_version"
    assert (root / "posters" / "images" / "tt01.jpg").read_bytes() == b["bytes"]
    assert (root / "color" / "000000001.jpg").read_bytes() == a["bytes"]
    answers = [{"question_id": q["question_id"], "prompt": q["text"], "text": "Yes"}
               for q in lines(out / "llava_mme.jsonl")]
    files = eval_mme.convert_answers(answers, eval_mme.load_gt(out / "ground_truth.tsv"))
    assert files["color"] == ["000000001.jpg\tIs the car red? Please answer yes or no.\tYes\tYes",
                              "000000001.jpg\tIs the car blue?  Please answer yes or no.\tNo\tYes"]


# ----------------------------------------------------------------------------- TextVQA


def test_textvqa_ocr_prompt_annotation_and_scorer(tmp_path):
    a, b = img(3, "JPEG"), img(4, "JPEG")
    data = save(tmp_path / "textvqa", {
        "image_id": ["003a8ae2ef43b901", "003a8ae2ef43b901", "b9dc400eb20bad64"],
        "question_id": [34602, 34603, 34604],
        "question": ["what is the brand of this camera?", "what does the small white text spell?", "what year?"],
        "question_tokens": [["what"], ["what"], ["what"]],
        "image": [a, a, b],
        "image_width": [4, 4, 4], "image_height": [3, 3, 3],
        "flickr_original_url": ["u", "u", "v"], "flickr_300k_url": ["u", "u", "v"],
        "answers": [["dakota"] * 10, ["copenhagen"] * 10, ["1999"] * 10],
        "image_classes": [["Camera"], ["Camera"], []],
        "set_name": ["val", "val", "val"],
        "ocr_tokens": [["DAKOTA", "DIGITAL"], ["COPENHAGEN"], []],
    }, {"image_id": Value("string"), "question_id": Value("int32"), "question": Value("string"),
        "question_tokens": Sequence(Value("string")), "image": Image(), "image_width": Value("int32"),
        "image_height": Value("int32"), "flickr_original_url": Value("string"), "flickr_300k_url": Value("string"),
        "answers": Sequence(Value("string")), "image_classes": Sequence(Value("string")),
        "set_name": Value("string"), "ocr_tokens": Sequence(Value("string"))}, split="validation")
    out = tmp_path / "out"
    info = run("textvqa", data, out)
    assert lines(out / "llava_textvqa_val_v051_ocr.jsonl") == [
        {"question_id": "003a8ae2ef43b901", "image": "003a8ae2ef43b901.jpg", "category": "default",
         "text": "What is the brand of this camera?\nReference OCR token: DAKOTA, DIGITAL" + SHORT},
        {"question_id": "003a8ae2ef43b901", "image": "003a8ae2ef43b901.jpg", "category": "default",
         "text": "What does the small white text spell?\nReference OCR token: COPENHAGEN" + SHORT},
        {"question_id": "b9dc400eb20bad64", "image": "b9dc400eb20bad64.jpg", "category": "default",
         "text": "What year?\nReference OCR token: " + SHORT},  # LLaVA keeps the empty OCR line
    ]
    ann = read_json(out / "TextVQA_0.5.1_val.json")
    assert ann["dataset_version"] == "0.5.1" and len(ann["data"]) == 3
    assert ann["data"][0]["image_id"] == "003a8ae2ef43b901" and ann["data"][0]["answers"] == ["dakota"] * 10
    assert "ocr_tokens" not in ann["data"][0] and "image" not in ann["data"][0]
    assert sorted(p.name for p in (out / "train_images").iterdir()) == ["003a8ae2ef43b901.jpg", "b9dc400eb20bad64.jpg"]
    assert info["images"] == {"written": 2, "unchanged": 0}
    write_jsonl(tmp_path / "ans.jsonl", [{"question_id": q["question_id"], "prompt": q["text"], "text": t}
                                         for q, t in zip(lines(out / "llava_textvqa_val_v051_ocr.jsonl"),
                                                         ["Dakota", "nope", "1999"])])
    result = eval_textvqa.evaluate_textvqa(out / "TextVQA_0.5.1_val.json", tmp_path / "ans.jsonl")
    assert result["accuracy"] == pytest.approx(200 / 3)


# ----------------------------------------------------------------------------- GQA


def test_gqa_two_configs_and_scorer(tmp_path):
    root = tmp_path / "GQA"
    save(root / "testdev_balanced_instructions", {
        "id": ["201307251", "201640614", "202225914"],
        "imageId": ["n161313", "n235859", "n161313"],
        "question": ["Is it overcast?", "Who is wearing the dress?", "Is the table clean?"],
        "answer": ["no", "woman", "yes"],
        "fullAnswer": ["No, it is clear.", "The woman is wearing a dress.", "Yes, the table is clean."],
        "isBalanced": [True, True, True],
    }, {"id": Value("string"), "imageId": Value("string"), "question": Value("string"), "answer": Value("string"),
        "fullAnswer": Value("string"), "isBalanced": Value("bool")}, split="testdev")
    images = {"n161313": img(5, "JPEG"), "n235859": img(6, "JPEG"), "n999999": img(7, "JPEG")}
    save(root / "testdev_balanced_images", {"id": list(images), "image": list(images.values())},
         {"id": Value("string"), "image": Image()}, split="testdev")
    out = tmp_path / "gqa"
    info = run("gqa", root, out)
    assert lines(out / "llava_gqa_testdev_balanced.jsonl") == [
        {"question_id": "201307251", "image": "n161313.jpg", "text": "Is it overcast?" + SHORT, "category": "default"},
        {"question_id": "201640614", "image": "n235859.jpg", "text": "Who is wearing the dress?" + SHORT,
         "category": "default"},
        {"question_id": "202225914", "image": "n161313.jpg", "text": "Is the table clean?" + SHORT,
         "category": "default"},
    ]
    gt = read_json(out / "data" / "testdev_balanced_questions.json")
    assert gt["201640614"] == {"imageId": "n235859", "question": "Who is wearing the dress?", "answer": "woman",
                               "fullAnswer": "The woman is wearing a dress.", "isBalanced": True}
    assert sorted(p.name for p in (out / "data" / "images").iterdir()) == ["n161313.jpg", "n235859.jpg"]
    assert (out / "data" / "images" / "n235859.jpg").read_bytes() == images["n235859"]["bytes"]
    assert info["counts"] == {"questions": 3, "images": 2}
    preds = [{"questionId": "201307251", "prediction": "no"}, {"questionId": "201640614", "prediction": "man"},
             {"questionId": "202225914", "prediction": "yes"}]
    assert eval_gqa.score_gqa(preds, gt)["correct"] == 2


def test_gqa_missing_image_is_named(tmp_path):
    root = tmp_path / "GQA"
    save(root / "testdev_balanced_instructions", {"id": ["7"], "imageId": ["n1"], "question": ["Q?"], "answer": ["a"]},
         {"id": Value("string"), "imageId": Value("string"), "question": Value("string"), "answer": Value("string")},
         split="testdev")
    save(root / "testdev_balanced_images", {"id": ["n2"], "image": [img(1)]}, {"id": Value("string"), "image": Image()},
         split="testdev")
    with pytest.raises(ValueError, match=r"image n1 \(question 7\)"):
        run("gqa", root, tmp_path / "gqa")


# ----------------------------------------------------------------------------- ScienceQA

SQA_FEATURES = {"image": Image(), "question": Value("string"), "choices": Sequence(Value("string")),
                "answer": Value("int8"), "hint": Value("string"), "task": Value("string"), "grade": Value("string"),
                "subject": Value("string"), "topic": Value("string"), "category": Value("string"),
                "skill": Value("string"), "lecture": Value("string"), "solution": Value("string")}


def sqa_rows() -> dict:
    n = 3
    return {
        "image": [img(8), img(9), img(10)],
        "question": ["Which of the following could Gordon's test show?", "What is the name of the colony shown?",
                     "Which animal's mouth is also adapted for bottom feeding?"],
        "choices": [["if the spacecraft was damaged", "how steady a parachute was"],
                    ["Maryland", "New Hampshire", "Rhode Island", "Vermont"], ["sturgeon", "tiger shark", "eel"]],
        "answer": [1, 1, 0],
        "hint": ["People can use the engineering-design process.\nFigure: a parachute.", "", "Figure: a sturgeon."],
        "task": ["closed choice"] * n, "grade": ["grade6"] * n, "subject": ["natural science"] * n,
        "topic": ["t"] * n, "category": ["c"] * n, "skill": ["s"] * n, "lecture": ["l"] * n, "solution": ["s"] * n,
    }


def test_scienceqa_img_files_and_scorer(tmp_path):
    data = save(tmp_path / "ScienceQA", sqa_rows(), SQA_FEATURES, split="test")
    out = tmp_path / "scienceqa"
    run("scienceqa", data, out)
    items = read_json(out / "llava_test_CQM-A.json")
    assert items[0] == {"id": "0", "image": "0/image.png", "conversations": [
        {"from": "human", "value": "<image>\nContext: People can use the engineering-design process.\n"
                                   "Figure: a parachute.\nWhich of the following could Gordon's test show?\n"
                                   "A. if the spacecraft was damaged\nB. how steady a parachute was"},
        {"from": "gpt", "value": "B"}]}
    assert items[1]["conversations"][0]["value"] == (  # empty hint: no Context line
        "<image>\nWhat is the name of the colony shown?\nA. Maryland\nB. New Hampshire\nC. Rhode Island\nD. Vermont")
    assert [i["conversations"][1]["value"] for i in items] == ["B", "B", "A"]
    assert read_json(out / "pid_splits.json") == {"test": ["0", "1", "2"]}
    problems = read_json(out / "problems.json")
    assert problems["2"]["choices"] == ["sturgeon", "tiger shark", "eel"] and problems["2"]["answer"] == 0
    assert problems["2"]["image"] == "image.png" and problems["2"]["split"] == "test"
    assert (out / "images" / "test" / "1" / "image.png").read_bytes() == sqa_rows()["image"][1]["bytes"]
    answers = {"0": {"text": "B", "prompt": "<image>\n..."}, "1": {"text": "C", "prompt": "<image>\n..."},
               "2": {"text": "A", "prompt": "<image>\n..."}}
    _, result = eval_science_qa.evaluate_science_qa(problems, read_json(out / "pid_splits.json")["test"], answers)
    assert result["correct"] == 2


def test_scienceqa_ids_from_llava_reference(tmp_path):
    data = save(tmp_path / "ScienceQA", sqa_rows(), SQA_FEATURES, split="test")
    first = run("scienceqa", data, tmp_path / "plain")  # build a reference with LLaVA-style ids from a plain run
    reference = read_json(tmp_path / "plain" / "llava_test_CQM-A.json")
    for entry, pid in zip(reference, ["61", "5", "11"]):
        entry["id"] = pid
        entry["image"] = f"{pid}/image.png"
    ref = tmp_path / "llava_test_CQM-A.json"
    ref.write_text(json.dumps(list(reversed(reference))))
    run("scienceqa", data, tmp_path / "ids", "--reference-questions", str(ref))
    assert [i["id"] for i in read_json(tmp_path / "ids" / "llava_test_CQM-A.json")] == ["61", "5", "11"]
    assert read_json(tmp_path / "ids" / "pid_splits.json") == {"test": ["61", "5", "11"]}
    assert (tmp_path / "ids" / "images" / "test" / "11" / "image.png").is_file()
    assert first["notes"] and "row numbers" in first["notes"][0]


# ----------------------------------------------------------------------------- MMBench

MMB_FEATURES = {"index": Value("string"), "question": Value("string"), "hint": Value("string"),
                "answer": Value("string"), "A": Value("string"), "B": Value("string"), "C": Value("string"),
                "D": Value("string"), "category": Value("string"), "image": Image(), "source": Value("string"),
                "L2-category": Value("string"), "comment": Value("string"), "split": Value("string")}


@pytest.mark.parametrize("bench, tsv, suffix", [
    ("mmbench", "mmbench_dev_20230712", "Answer with the option's letter from the given choices directly."),
    ("mmbench_cn", "mmbench_dev_cn_20231003", "请直接回答选项字母。"),
])
def test_mmbench_tsv_and_question_file(tmp_path, bench, tsv, suffix):
    from llava.eval.eval_mmbench import read_table

    pic, pic2 = img(11, "JPEG"), img(12)
    data = save(tmp_path / "MMBench", {
        "index": ["0", "1000000", "7"],
        "question": ["Which one is a cat?", "Which one is a cat?", "What color is it?\nPick one."],
        "hint": [None, None, "The picture shows a ball."],
        "answer": ["A", "B", "C"],
        "A": ["cat", "dog", "red"], "B": ["dog", "cat", "blue"], "C": [None, None, "green"], "D": [None, None, None],
        "category": ["identity", "identity", "color"], "image": [pic, pic, pic2],
        "source": ["s", "s", "s"], "L2-category": ["l2a", "l2a", "l2b"], "comment": [None, None, None],
        "split": ["dev"] * 3,
    }, MMB_FEATURES, split="dev")
    out = tmp_path / bench
    info = run(bench, data, out)
    table = read_table(out / f"{tsv}.tsv")
    assert list(table.columns) == ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image",
                                   "source", "l2-category", "comment", "split"]
    assert table["index"].tolist() == [0, 1000000, 7]
    assert table["question"].tolist()[2] == "What color is it?\nPick one."  # a newline survives the TSV
    assert table["hint"].tolist() == ["", "", "The picture shows a ball."]
    assert table["C"].tolist() == ["", "", "green"] and table["l2-category"].tolist() == ["l2a", "l2a", "l2b"]
    assert base64.b64decode(table["image"][2]) == pic2["bytes"]
    assert lines(out / f"llava_{tsv}.jsonl") == [
        {"question_id": 0, "image": "0.jpg", "text": f"Which one is a cat?\nA. cat\nB. dog\n{suffix}",
         "category": "identity"},
        {"question_id": 1000000, "image": "0.jpg", "text": f"Which one is a cat?\nA. dog\nB. cat\n{suffix}",
         "category": "identity"},
        {"question_id": 7, "image": "7.png", "category": "color",
         "text": f"The picture shows a ball.\nWhat color is it?\nPick one.\nA. red\nB. blue\nC. green\n{suffix}"},
    ]
    assert (out / "images" / "0.jpg").read_bytes() == pic["bytes"]
    assert info["counts"] == {"rows": 3, "questions": 2}


# ----------------------------------------------------------------------------- SEED-Bench


def test_seed_image_and_video_questions(tmp_path):
    frames = [img(20, "JPEG"), img(21, "JPEG"), img(22, "JPEG")]
    still = img(23, "JPEG")
    data = save(tmp_path / "SEED", {
        "answer": ["A", "C"], "choice_a": ["One", "open"], "choice_b": ["Two", "close"],
        "choice_c": ["Three", "pour"], "choice_d": ["Four", "cut"],
        "data_id": ["1454426_2591111986.jpg", "v1_video/abc.mp4"], "data_type": ["image", "video"],
        "question": ["How many towels are in the image?", "What is the action?"],
        "question_id": ["101669", "200001"], "question_type_id": [5, 10],
        "image": [[still], frames], "segment": [None, [1, 9]],
    }, {"answer": Value("string"), "choice_a": Value("string"), "choice_b": Value("string"),
        "choice_c": Value("string"), "choice_d": Value("string"), "data_id": Value("string"),
        "data_type": Value("string"), "question": Value("string"), "question_id": Value("string"),
        "question_type_id": Value("int64"), "image": Sequence(Image()), "segment": Sequence(Value("int64"))},
        split="test")
    out = tmp_path / "seed_bench"
    run("seed", data, out)
    opts = "\nAnswer with the option's letter from the given choices directly."
    assert lines(out / "llava-seed-bench.jsonl") == [
        {"question_id": 101669, "image": "SEED-Bench-image/1454426_2591111986.jpg",
         "text": "How many towels are in the image?\nA. One\nB. Two\nC. Three\nD. Four" + opts,
         "category": "Instances Counting"},
        {"question_id": 200001, "image": "SEED-Bench-video-image/10_200001.jpg",
         "text": "What is the action?\nA. open\nB. close\nC. pour\nD. cut" + opts, "category": "Action Recognition"},
    ]
    assert (out / "SEED-Bench-video-image" / "10_200001.jpg").read_bytes() == frames[1]["bytes"]  # middle frame
    assert (out / "SEED-Bench-image" / "1454426_2591111986.jpg").read_bytes() == still["bytes"]
    ann = read_json(out / "SEED-Bench.json")
    assert ann["question_type"]["Instances Counting"] == 5
    assert [(q["question_id"], q["answer"], q["question_type_id"], q["data_type"]) for q in ann["questions"]] == [
        ("101669", "A", 5, "image"), ("200001", "C", 10, "video")]


# ----------------------------------------------------------------------------- MM-Vet and LLaVA-Bench


def test_mmvet_question_file_and_grader_json(tmp_path):
    a, b = img(30), img(31)
    data = save(tmp_path / "MMVet", {
        "question_id": ["v1_0", "v1_1"], "image": [a, b],
        "question": ["What is x in the equation?", "The graph below shows ...\n\nSummarize it."],
        "answer": ["-1 <AND> -5", "The graph shows"], "image_source": ["v1_0.png", "v1_1.png"],
        "capability": ["ocr,math", "rec,ocr,gen"],
    }, {"question_id": Value("string"), "image": Image(), "question": Value("string"), "answer": Value("string"),
        "image_source": Value("string"), "capability": Value("string")}, split="test")
    out = tmp_path / "mm-vet"
    run("mmvet", data, out)
    raw = (out / "llava-mm-vet.jsonl").read_text().splitlines()
    assert raw[0] == '{"image": "v1_0.png", "text": "What is x in the equation?", "category": "conv", "question_id": 0}'
    assert json.loads(raw[1])["text"] == "The graph below shows ...\n\nSummarize it."
    assert read_json(out / "mm-vet.json") == {
        "v1_0": {"imagename": "v1_0.png", "capability": ["ocr", "math"], "question": "What is x in the equation?",
                 "answer": "-1 <AND> -5"},
        "v1_1": {"imagename": "v1_1.png", "capability": ["rec", "ocr", "gen"],
                 "question": "The graph below shows ...\n\nSummarize it.", "answer": "The graph shows"}}
    assert (out / "images" / "v1_1.png").read_bytes() == b["bytes"]


def test_llavabench_questions_context_and_gpt4_answers(tmp_path):
    a, b = img(40, "JPEG"), img(41, "JPEG")
    data = save(tmp_path / "llava-bench", {
        "question_id": [0, 1, 2], "question": ["What is this sight?", "Describe this photo in detail.", "What is it?"],
        "image": [a, a, b], "caption": ["Diamond Head.", "Diamond Head.", "A ramen bowl."],
        "gpt_answer": ["Diamond Head.", "An aerial view.", "Ramen."], "category": ["conv", "detail", "conv"],
    }, {"question_id": Value("int64"), "question": Value("string"), "image": Image(), "caption": Value("string"),
        "gpt_answer": Value("string"), "category": Value("string")}, split="train")
    out = tmp_path / "llava-bench-in-the-wild"
    run("llavabench", data, out)
    assert lines(out / "questions.jsonl") == [
        {"question_id": 0, "image": "001.jpg", "text": "What is this sight?", "category": "conv"},
        {"question_id": 1, "image": "001.jpg", "text": "Describe this photo in detail.", "category": "detail"},
        {"question_id": 2, "image": "002.jpg", "text": "What is it?", "category": "conv"},
    ]
    assert lines(out / "context.jsonl") == [{"id": "001", "image": "001.jpg", "caption": "Diamond Head."},
                                            {"id": "002", "image": "002.jpg", "caption": "A ramen bowl."}]
    gpt4 = lines(out / "answers_gpt4.jsonl")
    assert [(r["question_id"], r["prompt"], r["text"]) for r in gpt4] == [
        (0, "What is this sight?", "Diamond Head."), (1, "Describe this photo in detail.", "An aerial view."),
        (2, "What is it?", "Ramen.")]
    assert (out / "images" / "002.jpg").read_bytes() == b["bytes"]


# ----------------------------------------------------------------------------- VQAv2 and VizWiz


def test_vqav2_validation_with_annotations(tmp_path):
    from llava.eval import eval_vqa

    answers = [[{"answer": "yes", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)],
               [{"answer": "2", "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]]
    data = save(tmp_path / "VQAv2", {
        "question_type": ["is the", "how many"], "multiple_choice_answer": ["yes", "2"], "answers": answers,
        "image_id": [262148, 393225], "answer_type": ["yes/no", "number"], "question_id": [262148000, 393225001],
        "question": ["Is the ball flying?", "How many dogs?"], "image": [img(50, "JPEG"), img(51, "JPEG")],
    }, {"question_type": Value("string"), "multiple_choice_answer": Value("string"),
        "answers": [{"answer": Value("string"), "answer_confidence": Value("string"), "answer_id": Value("int64")}],
        "image_id": Value("int64"), "answer_type": Value("string"), "question_id": Value("int64"),
        "question": Value("string"), "image": Image()}, split="validation")
    out = tmp_path / "vqav2"
    run("vqav2", data, out, "--split", "validation")
    assert lines(out / "llava_vqav2_mscoco_val2014.jsonl") == [
        {"question_id": 262148000, "image": "COCO_val2014_000000262148.jpg", "text": "Is the ball flying?" + SHORT,
         "category": "default"},
        {"question_id": 393225001, "image": "COCO_val2014_000000393225.jpg", "text": "How many dogs?" + SHORT,
         "category": "default"},
    ]
    ann = out / "v2_mscoco_val2014_annotations.json"
    assert read_json(ann)["annotations"][1]["answers"][0] == {"answer": "2", "answer_confidence": "yes", "answer_id": 1}
    write_jsonl(tmp_path / "ans.jsonl", [{"question_id": 262148000, "prompt": "", "text": "Yes"},
                                         {"question_id": 393225001, "prompt": "", "text": "3"}])
    assert eval_vqa.score_vqa("vqav2", ann, tmp_path / "ans.jsonl")["accuracy"] == pytest.approx(50.0)


def test_vizwiz_prompt_ids_and_val_annotations(tmp_path):
    data = save(tmp_path / "VizWiz", {
        "question_id": ["VizWiz_val_00000000", "VizWiz_val_00000001"],
        "image": [img(60, "JPEG"), img(61, "JPEG")],
        "question": ["What is this TV remote? ", "can you read this label?"],
        "answers": [["remote"] * 10, ["unanswerable"] * 10], "category": ["other", "unanswerable"],
    }, {"question_id": Value("string"), "image": Image(), "question": Value("string"),
        "answers": Sequence(Value("string")), "category": Value("string")}, split="val")
    out = tmp_path / "vizwiz"
    run("vizwiz", data, out, "--split", "val")
    tail = "\nWhen the provided information is insufficient, respond with 'Unanswerable'." + SHORT
    assert lines(out / "llava_val.jsonl") == [  # LLaVA's text: str.capitalize(), trailing space kept
        {"question_id": 0, "image": "VizWiz_val_00000000.jpg", "text": "What is this tv remote? " + tail,
         "category": "default"},
        {"question_id": 1, "image": "VizWiz_val_00000001.jpg", "text": "Can you read this label?" + tail,
         "category": "default"},
    ]
    ann = read_json(out / "val.json")
    assert ann[1] == {"image": "VizWiz_val_00000001.jpg", "question": "can you read this label?",
                      "answers": [{"answer": "unanswerable"}] * 10, "answer_type": "unanswerable"}
    assert sorted(p.name for p in (out / "val").iterdir()) == ["VizWiz_val_00000000.jpg", "VizWiz_val_00000001.jpg"]


def test_registry_covers_every_benchmark():
    assert catalogue.names() == ["gqa", "llavabench", "mmbench", "mmbench_cn", "mme", "mmvet", "pope",
                                 "scienceqa", "seed", "textvqa", "vizwiz", "vqav2"]
    assert catalogue.get("mm-vet").name == "mmvet" and catalogue.get("SQA").name == "scienceqa"


# ----------------------------------------------------------------------------- against LLaVA's published files


def tiny_png(n: int) -> dict:
    buf = io.BytesIO()
    PILImage.new("RGB", (2, 2), (n % 256, n // 256 % 256, 0)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def columns(records: list[dict]) -> dict:
    out = collections.defaultdict(list)
    for r in records:
        for k, v in r.items():
            out[k].append(v)
    return dict(out)


def test_pope_reproduces_llava_files(tmp_path, ref13b):
    """lmms-lab-shaped rows made from the POPE label files give LLaVA's question file byte for byte."""
    images: dict[str, dict] = {}
    records = []
    for cat in ("adversarial", "random", "popular"):  # LLaVA's category order
        for r in read_jsonl(ref13b / "pope" / "labels" / f"coco_pope_{cat}.json"):
            src = r["image"][: -len(".jpg")]
            records.append({"id": "x", "question_id": str(r["question_id"]), "question": r["text"],
                            "answer": r["label"], "image_source": src,
                            "image": images.setdefault(src, tiny_png(len(images))), "category": cat})
    data = save(tmp_path / "POPE", columns(records), POPE_FEATURES, split="test")
    run("pope", data, tmp_path / "pope")
    assert (tmp_path / "pope" / "llava_pope_test.jsonl").read_bytes() == \
        (ref13b / "pope" / "llava_pope_test.jsonl").read_bytes()
    for cat in ("adversarial", "random", "popular"):  # POPE's own files end lines with CRLF
        ours = (tmp_path / "pope" / "labels" / f"coco_pope_{cat}.json").read_bytes()
        assert ours == (ref13b / "pope" / "labels" / f"coco_pope_{cat}.json").read_bytes().replace(b"\r\n", b"\n")


def test_mme_reproduces_llava_question_file_and_gt(tmp_path, ref13b):
    """Rows made from MME's ground truth give LLaVA's question lines and the same GT TSV."""
    paths = {(q["category"], q["image"].rsplit("/", 1)[-1]): q["image"]
             for q in read_jsonl(ref13b / "mme" / "llava_mme.jsonl")}
    images: dict[str, dict] = {}
    records = []
    for line in (ref13b / "mme" / "ground_truth.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        category, image, question, answer = line.split("\t")
        qid = paths[(category, image)]
        records.append({"question_id": qid, "image": images.setdefault(qid, tiny_png(len(images))),
                        "question": question, "answer": answer, "category": category})
    features = {"question_id": Value("string"), "image": Image(), "question": Value("string"),
                "answer": Value("string"), "category": Value("string")}
    run("mme", save(tmp_path / "MMEds", columns(records), features, split="test"), tmp_path / "MME")
    assert (tmp_path / "MME" / "ground_truth.tsv").read_bytes() == (ref13b / "mme" / "ground_truth.tsv").read_bytes()
    ours = (tmp_path / "MME" / "llava_mme.jsonl").read_text().splitlines()
    assert sorted(ours) == sorted((ref13b / "mme" / "llava_mme.jsonl").read_text().splitlines())


def test_mmvet_reproduces_llava_question_file(tmp_path, ref13b):
    records = [{"question_id": f"v1_{q['question_id']}", "image": tiny_png(q["question_id"]), "question": q["text"],
                "answer": "-", "image_source": q["image"], "capability": "rec"}
               for q in read_jsonl(ref13b / "mm-vet" / "llava-mm-vet.jsonl")]
    features = {"question_id": Value("string"), "image": Image(), "question": Value("string"),
                "answer": Value("string"), "image_source": Value("string"), "capability": Value("string")}
    run("mmvet", save(tmp_path / "MMVet", columns(records), features, split="test"), tmp_path / "mm-vet")
    assert (tmp_path / "mm-vet" / "llava-mm-vet.jsonl").read_bytes() == \
        (ref13b / "mm-vet" / "llava-mm-vet.jsonl").read_bytes()


def test_scienceqa_reproduces_llava_image_problems(tmp_path, ref13b):
    """Rows split back out of LLaVA's image prompts, with --reference-questions, give LLaVA's entries
    (2,017 problems, 213 of them with a prompt shared by another problem)."""
    reference = ref13b / "scienceqa" / "llava_test_CQM-A.json"
    expected = [e for e in read_json(reference) if "image" in e]
    records = []
    for e in expected:
        human = e["conversations"][0]["value"][len("<image>\n"):]
        head, _, rest = human.rpartition("\nA. ")
        choices = []
        for letter in "BCDE":
            choice, mark, after = rest.partition(f"\n{letter}. ")
            if not mark:
                break
            choices.append(choice)
            rest = after
        hint = ""
        if head.startswith("Context: "):
            hint, _, head = head[len("Context: "):].rpartition("\n")
        records.append({"image": tiny_png(0), "question": head, "choices": [*choices, rest],
                        "answer": "ABCDE".index(e["conversations"][1]["value"]), "hint": hint})
    features = {k: SQA_FEATURES[k] for k in ("image", "question", "choices", "answer", "hint")}
    data = save(tmp_path / "SQA", columns(records), features, split="test")
    run("scienceqa", data, tmp_path / "sqa", "--reference-questions", str(reference))
    assert read_json(tmp_path / "sqa" / "llava_test_CQM-A.json") == expected
