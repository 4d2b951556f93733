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


@pytest.mark.parametrize("bench", BENCHES)
def test_shared_answers_equal_the_plain_path(runs, bench):
    shared = read_answers(runs / ANSWERS[bench].format(run=RUN, k=K) / "merge.jsonl")
    plain = read_answers(runs / ANSWERS[bench].format(run="plain", k=K) / "merge.jsonl")
    assert len(shared) == len(plain) >= 3
    assert {a["metadata"]["shared_prefix"] for a in shared} == {True}
    assert {a["metadata"]["shared_prefix"] for a in plain} == {False}
    key = lambda a: (str(a["question_id"]), a["prompt"])  # noqa: E731
    assert sorted((key(a), a["text"]) for a in shared) == sorted((key(a), a["text"]) for a in plain)
