"""MMBench: CircularEval on the published dev submission, and the jsonl + TSV -> xlsx converter."""

import pytest

from llava.eval import eval_mmbench
from llava.eval.eval_mmbench import circular_accuracy, extract_choice, read_table

OPTIONS = {"A": "cat", "B": "dog", "C": "None"}


@pytest.mark.parametrize(
    "pred, expected",
    [("B", "B"), (" C\n", "C"), ("B.", "B"), ("(A)", "A"), ("A: cat", "A"), ("Dog.", "B"), ("none", "C"),
     ("D", None), ("b", None), ("A cat", None), ("", None), ("I think B", None)],
)
def test_extract_choice(pred, expected):
    assert extract_choice(pred, OPTIONS) == expected


def test_circular_grouping(tmp_path):
    import pandas as pd

    table = pd.DataFrame({
        "index": [1, 1_000_001, 2, 1_000_002, 2_000_002, 3],
        "A": ["x", "y", "p", "q", "r", "u"], "B": ["y", "x", "q", "r", "p", "v"], "C": ["", "", "r", "p", "q", ""],
        "prediction": ["A", "B", "A", "C", "A", "A"],
        "answer": ["A", "B", "A", "C", "B", "A"],
        "category": ["c1", "c1", "c2", "c2", "c2", "c1"],
    })
    res = circular_accuracy(table)
    assert (res["questions"], res["hits"], res["rows"]) == (3, 2, 6)  # question 2 fails its third pass
    assert res["accuracy"] == pytest.approx(200 / 3) and res["row_accuracy"] == pytest.approx(500 / 6)
    assert res["per_category"] == {"c1": 100.0, "c2": 0.0}


def test_reference_dev_xlsx(ref13b, capsys):
    res = eval_mmbench.main(["--result-file", str(ref13b / "mmbench" / "answers_upload.xlsx")])
    assert (res["hits"], res["questions"], res["rows"]) == (796, 1176, 4377)
    assert res["accuracy"] == pytest.approx(67.687, abs=0.001)
    assert res["row_accuracy"] == pytest.approx(100 * 3346 / 4377)
    assert "CircularEval accuracy: 67.687% (796/1176 questions)" in capsys.readouterr().out


def test_reference_jsonl_plus_tsv_roundtrip(ref13b, tmp_path, capsys):
    """Answers jsonl + a TSV (rebuilt from the xlsx) -> score and a submission equal to the published one."""
    d = ref13b / "mmbench"
    published = read_table(d / "answers_upload.xlsx")
    tsv = published.drop(columns=["prediction"]).copy()
    tsv.insert(2, "hint", "")
    tsv["category"] = ["even" if i % 2 == 0 else "odd" for i in tsv["index"] % 1_000_000]
    tsv["l2-category"] = "l2"
    tsv["image"] = "base64"
    tsv.to_csv(tmp_path / "mmbench_dev.tsv", sep="\t", index=False)

    upload = tmp_path / "upload.xlsx"
    res = eval_mmbench.main(["--result-file", str(d / "answers.jsonl"), "--annotation-file", str(tmp_path / "mmbench_dev.tsv"),
                             "--upload-file", str(upload), "--benchmark-name", "MMB", "--save-json", str(tmp_path / "s.json")])
    assert (res["hits"], res["questions"]) == (796, 1176)
    assert set(res["per_category"]) == {"even", "odd"}
    assert "wrote 4377 rows" in capsys.readouterr().out
    got = read_table(upload)
    assert list(got.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "category",
                                 "l2-category", "split"]
    cols = ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert got[cols].equals(published[cols])


def test_jsonl_needs_tsv_and_test_split_has_no_answers(tmp_path, capsys):
    (tmp_path / "a.jsonl").write_text('{"question_id": 1, "text": "A"}\n')
    with pytest.raises(ValueError, match="pass --annotation-file"):
        eval_mmbench.main(["--result-file", str(tmp_path / "a.jsonl")])
    (tmp_path / "test.tsv").write_text("index\tquestion\tA\tB\n1\tq\tx\ty\n")
    out = eval_mmbench.main(["--result-file", str(tmp_path / "a.jsonl"), "--annotation-file", str(tmp_path / "test.tsv"),
                             "--upload-file", str(tmp_path / "cn.xlsx")])
    assert out == {} and "submit the xlsx" in capsys.readouterr().out
    assert read_table(tmp_path / "cn.xlsx")["prediction"].tolist() == ["A"]


def test_submission_strips_characters_xlsx_cannot_hold(tmp_path):
    import pandas as pd

    from llava.eval.eval_mmbench import write_submission

    table = pd.DataFrame({"index": [1], "question": ["q"], "A": ["a"], "B": ["b"], "prediction": ["mountain WHY=\x17"]})
    path = write_submission(table, tmp_path / "up.xlsx")
    assert pd.read_excel(path)["prediction"].tolist() == ["mountain WHY="]
