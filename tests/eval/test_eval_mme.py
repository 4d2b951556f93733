"""MME: eval_tool conversion (TSV and release-folder GT) and the official acc / acc+ arithmetic."""

import json
import shutil

import pytest

from llava.eval import eval_mme
from llava.eval.eval_mme import (
    COGNITION,
    PERCEPTION,
    convert_answers,
    load_gt,
    parse_pred,
    score_lines,
    score_results_dir,
    write_results_dir,
)
from llava.eval.io_utils import load_answers

REFERENCE_SCORES = {
    "existence": 185.00, "count": 155.00, "position": 133.33, "color": 170.00, "posters": 160.54,
    "celebrity": 152.94, "scene": 161.25, "landmark": 170.50, "artwork": 117.75, "OCR": 125.00,
    "commonsense_reasoning": 127.86, "numerical_calculation": 42.50, "text_translation": 77.50,
    "code_reasoning": 47.50,
}


@pytest.mark.parametrize(
    "pred, expected",
    [
        ("Yes", "yes"), ("NO", "no"), ("yes, there is", "yes"), (" yes", "yes"), ("Not sure", "no"),
        ("nobody", "no"), ("Yesterday", "yes"), ("I think yes", "other"), ("Church", "other"),
        ("unknown", "other"), ("", "other"), ("nO.", "no"), ("Certainly not", "other"),
    ],
)
def test_parse_pred(pred, expected):
    assert parse_pred(pred) == expected


def _write(folder, name, rows):
    (folder / f"{name}.txt").write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


def test_hand_built_results_folder(tmp_path, capsys):
    _write(tmp_path, "existence", [
        ("1.jpg", "q1", "Yes", "Yes"), ("1.jpg", "q2", "No", "No"),              # both right
        ("2.jpg", "q1", "Yes", "yes, there is"), ("2.jpg", "q2", "No", "Church"),  # 'other' is wrong
        ("3.jpg", "q1", "No", "Not sure"), ("3.jpg", "q2", "Yes", "No"),           # 'not' parses as no
    ])
    _write(tmp_path, "count", [("1.jpg", "q1", "Yes", "Yes"), ("1.jpg", "q2", "No", "no")])
    _write(tmp_path, "code_reasoning", [
        ("a.png", "q1", "Yes", "No"), ("a.png", "q2", "No", "Yes"),
        ("b.png", "q1", "Yes", "YES"), ("b.png", "q2", "No", "nO."),
    ])
    res = score_results_dir(tmp_path)
    ex = res["subtasks"]["existence"]
    assert (ex["questions"], ex["correct"], ex["images"], ex["images_both_correct"]) == (6, 4, 3, 1)
    assert ex["acc"] == pytest.approx(400 / 6) and ex["acc_plus"] == pytest.approx(100 / 3)
    assert ex["score"] == pytest.approx(100.0)
    assert res["subtasks"]["count"]["score"] == pytest.approx(200.0)
    assert res["subtasks"]["code_reasoning"]["score"] == pytest.approx(100.0)  # acc 50 + acc+ 50
    assert res["perception"] == pytest.approx(300.0) and res["cognition"] == pytest.approx(100.0)
    assert res["total"] == pytest.approx(400.0)
    assert set(res["missing"]) == set(PERCEPTION + COGNITION) - {"existence", "count", "code_reasoning"}

    eval_mme.main(["--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "total score: 300.00" in out and "total score: 100.00" in out
    assert "missing subtask files (not scored): position" in out


def test_odd_and_broken_files_are_rejected():
    with pytest.raises(ValueError, match="3 lines; MME needs exactly two questions per image"):
        score_lines(["a\tq\tYes\tYes", "a\tq\tNo\tNo", "b\tq\tYes\tYes"], "odd.txt")
    with pytest.raises(ValueError, match="different images"):
        score_lines(["a\tq\tYes\tYes", "b\tq\tNo\tNo"], "mixed.txt")
    with pytest.raises(ValueError, match="GT 'Maybe'"):
        score_lines(["a\tq\tMaybe\tYes", "a\tq\tNo\tNo"], "gt.txt")
    with pytest.raises(ValueError, match="3 tab-separated fields"):
        score_lines(["a\tq\tYes", "a\tq\tNo\tNo"], "short.txt")


def test_two_space_question_variant(tmp_path):
    gt = tmp_path / "gt.tsv"
    gt.write_text("category\timage\tquestion\tanswer\n"
                  "color\t1.jpg\tIs it red?  Please answer yes or no.\tYes\n"
                  "color\t1.jpg\tIs it blue? Please answer yes or no.\tNo\n")
    answers = [
        {"question_id": "color/1.jpg", "prompt": "Is it red?\nAnswer the question using a single word or phrase.", "text": "Yes"},
        {"question_id": "color/1.jpg", "prompt": "Is it blue?\nAnswer the question using a single word or phrase.", "text": "No\tindeed"},
    ]
    files = convert_answers(answers, load_gt(gt))
    assert files == {"color": ["1.jpg\tIs it red?  Please answer yes or no.\tYes\tYes",
                               "1.jpg\tIs it blue? Please answer yes or no.\tNo\tNo indeed"]}
    with pytest.raises(ValueError, match="question color/1.jpg: 'Is it green\\? Please answer yes or no.' is not in"):
        convert_answers([{"question_id": "color/1.jpg", "prompt": "Is it green?", "text": "No"}], load_gt(gt))


def _check_reference_scores(res):
    assert res["missing"] == []
    for name, score in REFERENCE_SCORES.items():
        assert res["subtasks"][name]["score"] == pytest.approx(score, abs=0.005), name
    assert res["perception"] == pytest.approx(1531.32, abs=0.005)
    assert res["cognition"] == pytest.approx(295.36, abs=0.005)


def test_reference_13b_cli(ref13b, tmp_path, capsys):
    d = ref13b / "mme"
    out = tmp_path / "results"
    res = eval_mme.main(["--answers-file", str(d / "answers.jsonl"), "--gt", str(d / "ground_truth.tsv"),
                         "--results-dir", str(out), "--save-json", str(tmp_path / "score.json")])
    _check_reference_scores(res)
    text = capsys.readouterr().out
    assert "total score: 1531.32" in text and "total score: 295.36" in text
    rec = json.loads((tmp_path / "score.json").read_text())
    assert rec["benchmark"] == "MME" and rec["k"] is None
    assert rec["headline"] == pytest.approx(1531.3187, abs=1e-3)
    assert rec["metrics"]["cognition"] == pytest.approx(295.3571, abs=1e-3)
    # converted files keep answer-file order within each subtask
    answers = [a for a in load_answers(d / "answers.jsonl") if a["question_id"].startswith("OCR/")]
    lines = (out / "OCR.txt").read_text().splitlines()
    assert [ln.split("\t")[3] for ln in lines] == [a["text"] for a in answers]
    assert sum(len((out / f"{n}.txt").read_text().splitlines()) for n in REFERENCE_SCORES) == 2374


def test_reference_13b_release_folder_layouts(ref13b, tmp_path):
    """GT read from an MME-release-style folder (both layouts) converts and scores the same as the TSV."""
    d = ref13b / "mme"
    release = tmp_path / "MME_Benchmark_release"
    rows = [ln.split("\t") for ln in (d / "ground_truth.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    for cat, image, question, ans in rows:
        nested = cat in PERCEPTION[:5]  # images/ + questions_answers_YN/ for some, side by side for the rest
        img_dir = release / cat / "images" if nested else release / cat
        qa_dir = release / cat / "questions_answers_YN" if nested else release / cat
        img_dir.mkdir(parents=True, exist_ok=True)
        qa_dir.mkdir(parents=True, exist_ok=True)
        (img_dir / image).touch()
        with (qa_dir / (image.rsplit(".", 1)[0] + ".txt")).open("a", encoding="utf-8") as f:
            f.write(f"{question}\t{ans}\n")
    gt = load_gt(release)
    assert len(gt) == 2374
    files = convert_answers(load_answers(d / "answers.jsonl"), gt)
    _check_reference_scores(score_results_dir(write_results_dir(files, tmp_path / "out")))
    shutil.rmtree(release)
