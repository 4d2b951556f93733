"""Every method through the scripts' METHOD / METHOD_ARGS: pope.sh on the tiny model with a pre-LLM
method, FastV (budget K after its layer) and PyramidDrop (schedule in its arguments, K = 576), the
answers' uniform token accounting, the score records' layer-averaged tokens, and `summarize --align
layer-averaged` lining the runs up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_scripts_v1_5 import read_answers, run_scripts, script_env

from llava.eval.make_mini_data import build_data_root

RUNS = {  # RUN_NAME: (K, METHOD, METHOD_ARGS); the tiny LLM has 4 layers
    "base": (576, "fastervlm", ""),
    "fastervlm": (58, "fastervlm", ""),
    "fastv": (58, "fastv", "layer=2"),
    "pdrop": (576, "pdrop", "layers=1:2:3"),
}


@pytest.fixture(scope="module")
def runs(tiny_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("scripts_methods")
    data_root = base / "data"
    build_data_root(data_root)
    out = {}
    for name, (k, method, args) in RUNS.items():
        env = script_env(tiny_path, data_root, base / "results" / name, METHOD=method, METHOD_ARGS=args,
                         RUN_NAME=name)
        result = run_scripts(["pope"], k, env, base, workers=1)["pope"]
        assert result.returncode == 0, result.stderr[-4000:]
        out[name] = read_answers(data_root / "pope" / "answers" / name / f"k{k}" / "merge.jsonl")
    return base, out


def test_every_method_records_the_same_accounting_fields(runs):
    _, answers = runs
    keys = {"visual_tokens", "prune_layers", "visual_tokens_after_layers", "layer_averaged_visual_tokens"}
    for name, rows in answers.items():
        assert rows and all(keys <= r["metadata"].keys() for r in rows), name
    pre = answers["fastervlm"][0]["metadata"]
    assert (pre["visual_tokens"], pre["prune_layers"], pre["layer_averaged_visual_tokens"]) == (58, [], 58.0)
    fastv = answers["fastv"][0]["metadata"]
    assert fastv["pruning_method"] == "fastv" and fastv["pruning_args"] == {"layer": 2}
    assert (fastv["visual_tokens"], fastv["prune_layers"], fastv["visual_tokens_after_layers"]) == (576, [2], [58])
    assert fastv["layer_averaged_visual_tokens"] == (2 * 576 + 2 * 58) / 4
    pdrop = answers["pdrop"][0]["metadata"]
    assert pdrop["prune_layers"] == [1, 2, 3] and pdrop["visual_tokens_after_layers"] == [288, 144, 72]
    assert pdrop["layer_averaged_visual_tokens"] == (576 + 288 + 144 + 72) / 4


def test_records_and_the_aligned_table(runs):
    base, _ = runs
    record = json.loads((base / "results" / "fastv" / "pope" / "k58.json").read_text())
    assert record["method"] == "fastv" and record["layer_averaged_visual_tokens"] == (2 * 576 + 2 * 58) / 4
    table = subprocess.run([sys.executable, "-m", "llava.eval.summarize", str(base / "results"), "--align",
                            "layer-averaged"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    got = [(c[1].strip(), c[2].strip(), c[3].strip()) for c in rows[1:]]
    assert got == [("unpruned (baseline)", "576", "576.0"), ("fastv", "58", "317.0"), ("pdrop", "576", "270.0"),
                   ("fastervlm", "58", "58.0")]
