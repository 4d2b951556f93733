"""VQA answer normalisation and the 10-choose-9 VQA accuracy."""

import pytest

from llava.eval.vqa_metric import mean_accuracy, vqa_accuracy
from llava.eval.vqa_normalize import normalize_answer


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Yes", "yes"),
        ("  Two dogs.  ", "2 dogs"),
        ("The cat", "cat"),
        ("an apple a day", "apple day"),
        ("none", "0"),
        ("ten", "10"),
        ("3.5", "3.5"),  # a period before a digit stays
        ("1,000", "1000"),  # commas are dropped up front
        ("dont", "don't"),
        ("Im", "im"),  # capitalised table keys never fire after lower-casing
        ("somebody'd", "somebodyd"),  # odd official entry kept
        ("man's hat", "man 's hat"),
        ("what?", "what"),
        ("black/white", "black white"),  # no space around '/': becomes a space
        ("black / white", "black white"),  # touches a space: removed
        ("left-hand (side)", "left hand side"),
        ("e.g. yes", "eg yes"),
        ("line\none\ttwo", "line 1 2"),
        ("x!", "x"),  # '!' at the end does not touch a space: becomes a space, then stripped by split
        ("a", ""),
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_only_32_periods_are_removed():
    assert normalize_answer("." * 40 + "x") == "." * 8 + "x"


def test_digit_comma_digit_removes_all_punctuation():
    # The comma rule is checked on the text after commas were already dropped, so it never fires;
    # '-' therefore becomes a space.
    assert normalize_answer("2,5-3") == "25 3"


@pytest.mark.parametrize(
    "matches, expected",
    [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)],
)
def test_vqa_accuracy_counts(matches, expected):
    gts = ["cat"] * matches + ["dog"] * (10 - matches)
    assert vqa_accuracy("Cat.", gts) == pytest.approx(expected)


def test_vqa_accuracy_normalises_both_sides_and_averages():
    assert vqa_accuracy("two", ["2", "2", "2", "two", "x", "x", "x", "x", "x", "x"]) == pytest.approx(1.0)
    assert mean_accuracy([("a", ["a"] * 10), ("b", ["a"] * 10)]) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        vqa_accuracy("a", [])
