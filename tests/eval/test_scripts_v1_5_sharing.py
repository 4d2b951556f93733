"""The v1_5 GQA, POPE and MME scripts share each image's prefix by default, and answer as the plain path does."""

from __future__ import annotations

import pytest

from llava.eval.make_mini_data import build_data_root

from test_scripts_v1_5 import ANSWERS, K, RUN, read_answers, run_scripts, script_env

BENCHES = ["gqa", "pope", "mme"]


@pytest.fixture(scope="module")
def runs(tiny_path, tmp_path_factory):
    """Each script run at K=58 by default (shared prefix) and with --no-share-prefix (RUN_NAME=plain)."""
    base = tmp_path_factory.mktemp("scripts_sharing")
    data_root = base / "data"
    build_data_root(data_root)
    shared = script_env(tiny_path, data_root, base / "results")
    plain = script_env(tiny_path, data_root, base / "results_plain", RUN_NAME="plain",
                       EXTRA_ARGS="--no-share-prefix")
    logs = {**{("shared", b): r for b, r in run_scripts(BENCHES, K, shared, base).items()},
            **{("plain", b): r for b, r in run_scripts(BENCHES, K, plain, base).items()}}
    for (mode, bench), result in logs.items():
        assert result.returncode == 0, f"{bench}.sh ({mode}) failed:\n{result.stderr[-4000:]}"
    return data_root


QUESTIONS = {"gqa": "gqa/llava_gqa_testdev_balanced.jsonl", "pope": "pope/llava_pope_test.jsonl",
             "mme": "MME/llava_mme.jsonl"}


def _image_of(data_root, bench) -> dict:
    """(question_id, prompt) -> image, from the benchmark's question file."""
    rows = read_answers(data_root / QUESTIONS[bench])
    return {(str(r["question_id"]), r["text"]): r["image"] for r in rows}


@pytest.mark.parametrize("bench", BENCHES)
def test_shared_answers_equal_the_plain_path(runs, bench):
    shared = read_answers(runs / ANSWERS[bench].format(run=RUN, k=K) / "merge.jsonl")
    plain = read_answers(runs / ANSWERS[bench].format(run="plain", k=K) / "merge.jsonl")
    assert len(shared) == len(plain) >= 3
    image = _image_of(runs, bench)
    per_image = {im: list(image.values()).count(im) for im in image.values()}
    # shared exactly where the image has another question (an image with one takes the plain path)
    assert {(str(a["question_id"]), a["prompt"]): a["metadata"]["shared_prefix"] for a in shared} == {
        key: per_image[im] > 1 for key, im in image.items()}
    assert any(a["metadata"]["shared_prefix"] for a in shared)
    assert {a["metadata"]["shared_prefix"] for a in plain} == {False}
    key = lambda a: (str(a["question_id"]), a["prompt"])  # noqa: E731
    assert sorted((key(a), a["text"]) for a in shared) == sorted((key(a), a["text"]) for a in plain)
