"""The ScienceQA, MMBench and open-ended drivers: LLaVA-1.5's prompts, and end to end on the tiny model."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from llava.eval.model_vqa_mmbench import LETTER_INSTRUCTION, mmbench_items, read_mmbench_tsv
from llava.eval.model_vqa_science import science_items

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
COMMON = ["--conv-mode", "vicuna_v1", "--temperature", "0", "--max_new_tokens", "4", "--device", "cpu"]


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_science_prompts_equal_the_published_ones(ref13b):
    sqa = ref13b / "scienceqa"
    items = science_items(json.loads((sqa / "llava_test_CQM-A.json").read_text()), single_pred_prompt=True)
    output = json.loads((sqa / "llava-v1.5-13b_output.jsonl").read_text())
    published = {str(r["question_id"]): r["question"] for r in output["correct"] + output["incorrect"]}
    assert len(items) == len(published) == 4241
    assert all(published[str(it.question_id)] == it.prompt_field for it in items)
    sample = json.loads((sqa / "answers.jsonl").read_text().splitlines()[0])
    assert next(it for it in items if it.question_id == "4").prompt_field == sample["prompt"]


def test_science_end_to_end(tiny_path, tmp_path):
    from llava.eval.model_vqa_science import main

    problems = [
        {"id": "1", "image": "shapes.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?\nA. a circle\nB. a dog"}, {"from": "gpt", "value": "A"}]},
        {"id": "2", "conversations": [
            {"from": "human", "value": "Which is a fruit?\nA. apple\nB. brick"}, {"from": "gpt", "value": "A"}]},
    ]
    qfile = tmp_path / "sqa.json"
    qfile.write_text(json.dumps(problems))
    main(["--model-path", tiny_path, "--question-file", str(qfile), "--image-folder", str(SAMPLES),
          "--answers-file", str(tmp_path / "a.jsonl"), "--single-pred-prompt", "--visual-token-num", "29", *COMMON])
    answers = _lines(tmp_path / "a.jsonl")
    assert [a["question_id"] for a in answers] == ["1", "2"]
    assert answers[0]["prompt"] == "<image>\nWhat is shown?\nA. a circle\nB. a dog\n" + LETTER_INSTRUCTION["en"]
    assert answers[1]["prompt"] == "Which is a fruit?\nA. apple\nB. brick\n" + LETTER_INSTRUCTION["en"]
    assert answers[0]["metadata"]["visual_tokens"] == 29 and answers[1]["metadata"]["visual_tokens"] == []


def _b64(name: str) -> str:
    buf = io.BytesIO()
    Image.open(SAMPLES / name).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture()
def mmbench_tsv(tmp_path) -> Path:
    import pandas as pd

    rows = [
        {"index": 10, "question": "What shape is red?", "hint": "Look closely.", "A": "circle", "B": "square",
         "C": "triangle", "D": "nan", "answer": "A", "image": _b64("shapes.png"), "category": "c", "split": "dev"},
        {"index": 1000010, "question": "What shape is red?", "hint": "nan", "A": "square", "B": "None",
         "C": "x", "D": "y", "answer": "B", "image": _b64("shapes.png"), "category": "c", "split": "dev"},
    ]
    path = tmp_path / "mmb.tsv"
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_mmbench_prompts_options_and_rounds(mmbench_tsv):
    rows = read_mmbench_tsv(str(mmbench_tsv))
    items = mmbench_items(rows, "en", single_pred_prompt=True, all_rounds=True)
    assert [(it.question_id, it.extra["round_id"]) for it in items] == [(10, 0), (10, 1), (10, 2), (1000010, 0)]
    first = items[0]
    assert first.prompt_field == "Look closely.\nWhat shape is red?\nA. circle\nB. square\nC. triangle"
    assert first.question == first.prompt_field + "\n" + LETTER_INSTRUCTION["en"]
    assert items[1].prompt_field.endswith("A. square\nB. triangle\nC. circle")
    assert items[1].extra["option_char"] == ["B", "C", "A"]
    assert items[3].prompt_field == "What shape is red?\nA. square"  # LLaVA stops at a 'None' option
    cn = mmbench_items(rows, "cn", single_pred_prompt=True, all_rounds=False)
    assert cn[0].question.endswith("请直接回答选项字母。") and len(cn) == 2
    with pytest.raises(ValueError, match="--lang"):
        mmbench_items(rows, "fr", True, False)


def test_mmbench_end_to_end_then_scored(tiny_path, mmbench_tsv, tmp_path):
    from llava.eval.model_vqa_mmbench import main

    answers = tmp_path / "a.jsonl"
    main(["--model-path", tiny_path, "--question-file", str(mmbench_tsv), "--answers-file", str(answers),
          "--single-pred-prompt", "--visual-token-num", "58", "--batch-size", "2", *COMMON])
    got = _lines(answers)
    assert [a["question_id"] for a in got] == [10, 1000010]
    assert got[0]["round_id"] == 0 and got[0]["options"] == ["circle", "square", "triangle"]
    assert got[0]["metadata"]["visual_tokens"] == 58 and got[0]["metadata"]["lang"] == "en"


def test_open_ended_and_repeated_question_ids(tiny_path, tmp_path):
    from llava.eval.model_vqa import main

    qfile = tmp_path / "q.jsonl"
    # MME-style: one question_id, two questions about the same image
    qfile.write_text("".join(json.dumps(q) + "\n" for q in [
        {"question_id": "count/scene.png", "image": "scene.png", "text": "Is there one house?"},
        {"question_id": "count/scene.png", "image": "scene.png", "text": "Are there two houses?"},
    ]))
    args = ["--model-path", tiny_path, "--question-file", str(qfile), "--image-folder", str(SAMPLES),
            "--answers-file", str(tmp_path / "a.jsonl"), *COMMON]
    main(args)
    main(args)  # resumed: nothing new
    got = _lines(tmp_path / "a.jsonl")
    assert [a["prompt"] for a in got] == ["Is there one house?", "Are there two houses?"]
