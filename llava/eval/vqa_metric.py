"""VQA accuracy of one prediction against the human answers (10-choose-9 averaged min(1, matches/3))."""

from __future__ import annotations

from typing import Callable, Sequence

from .vqa_normalize import normalize_answer


def vqa_accuracy(prediction: str, gt_answers: Sequence[str],
                 normalize: Callable[[str], str] = normalize_answer) -> float:
    """Mean over the leave-one-out subsets of the human answers of min(1, matches/3).

    Both the prediction and the human answers are normalised first. With n answers of which m
    equal the prediction, leaving out a matching answer gives min(1, (m-1)/3) and leaving out any
    other gives min(1, m/3).
    """
    if not gt_answers:
        raise ValueError("vqa_accuracy needs at least one human answer")
    pred = normalize(prediction)
    gts = [normalize(a) for a in gt_answers]
    matches = sum(g == pred for g in gts)
    n = len(gts)
    return (matches * min(1.0, (matches - 1) / 3) + (n - matches) * min(1.0, matches / 3)) / n


def mean_accuracy(pairs: Sequence[tuple[str, Sequence[str]]]) -> float:
    """Mean `vqa_accuracy` over (prediction, human answers) pairs, in percent."""
    if not pairs:
        raise ValueError("no predictions to score")
    return 100 * sum(vqa_accuracy(p, g) for p, g in pairs) / len(pairs)
