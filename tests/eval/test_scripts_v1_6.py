"""scripts/v1_6/eval/*.sh on a tiny LLaVA-NeXT checkpoint: both pruning modes, counts, folders, the checked merge."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "assets" / "samples"


@pytest.fixture(scope="module")
def next_ckpt(tiny_dir) -> str:
    from llava.model.tiny import NEXT_DIR, save_tiny_next_checkpoint

    path = tiny_dir / NEXT_DIR
    return str(path if (path / "config.json").exists() else save_tiny_next_checkpoint(tiny_dir))


@pytest.fixture()
def pope_root(tmp_path) -> Path:
    """A 2-question POPE layout (one category) with its label file."""
    from PIL import Image

    pope = tmp_path / "data" / "pope"
    (pope / "val2014").mkdir(parents=True)
    (pope / "labels").mkdir()
    rows = []
    for i, (name, size) in enumerate([("shapes.png", (480, 320)), ("stripes.png", (300, 420))]):
        Image.open(SAMPLES / name).convert("RGB").resize(size).save(pope / "val2014" / name)
        rows.append({"question_id": i, "image": name, "text": f"Is there a thing {i}?", "category": "random"})
    (pope / "llava_pope_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (pope / "labels" / "coco_pope_random.json").write_text("".join(
        json.dumps({"question_id": r["question_id"], "image": r["image"], "text": r["text"], "label": "yes"}) + "\n"
        for r in rows))
    return tmp_path


def _run(script, k, env):
    return subprocess.run(["bash", str(REPO / "scripts" / "v1_6" / "eval" / script), str(k)], env=env,
                          check=True, capture_output=True, text=True, cwd=REPO)


def test_pope_in_both_anyres_modes(next_ckpt, pope_root):
    base = {**os.environ, "CKPT": next_ckpt, "DATA_ROOT": str(pope_root / "data"), "DEVICE": "cpu",
            "MAX_NEW_TOKENS": "3", "RESULTS": str(pope_root / "results"), "OMP_NUM_THREADS": "1"}
    _run("pope.sh", 29, {**base, "ANYRES_MODE": "paper"})
    _run("pope.sh", 300, base)  # faithful is the default
    answers = pope_root / "data" / "pope" / "answers"
    paper = [json.loads(x) for x in (answers / "llava-v1.6-tiny-paper" / "k29" / "merge.jsonl").read_text().splitlines()]
    faithful = [json.loads(x) for x in
                (answers / "llava-v1.6-tiny-faithful" / "k300" / "merge.jsonl").read_text().splitlines()]
    assert [a["metadata"]["visual_tokens"] for a in paper] == [145, 145]  # 5 views x 29
    assert all(a["metadata"]["anyres_mode"] == "paper" for a in paper)
    assert all(a["metadata"]["anyres_mode"] == "faithful" for a in faithful)
    assert all(300 < a["metadata"]["visual_tokens"] <= 300 + 48 for a in faithful)  # K + newlines of kept rows
    assert len(list((pope_root / "results").rglob("*.json"))) == 2


def test_bad_anyres_mode_is_refused(next_ckpt, pope_root):
    env = {**os.environ, "CKPT": next_ckpt, "DATA_ROOT": str(pope_root / "data"), "ANYRES_MODE": "square"}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "v1_6" / "eval" / "pope.sh"), "29"], env=env,
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "ANYRES_MODE must be faithful or paper" in proc.stderr


def test_every_v1_6_script_runs_on_the_tiny_next_model(next_ckpt, tmp_path):
    """All 12 scripts end to end in paper mode: 5 x K visual tokens per image question."""
    from test_scripts_v1_5 import ANSWERS, read_answers, run_scripts, script_env

    from llava.eval.make_mini_data import build_data_root

    data_root, results = tmp_path / "data", tmp_path / "results"
    counts = build_data_root(data_root)
    env = script_env(next_ckpt, data_root, results, ANYRES_MODE="paper", MAX_NEW_TOKENS="2")
    logs = run_scripts(list(counts), 29, env, tmp_path, scripts=REPO / "scripts" / "v1_6" / "eval")
    failed = {b: p.stderr[-2000:] for b, p in logs.items() if p.returncode != 0}
    assert not failed, failed
    for bench, n in counts.items():
        answers = read_answers(data_root / ANSWERS[bench].format(run="llava-v1.6-tiny-paper", k=29) / "merge.jsonl")
        assert len(answers) == n, bench
        with_image = [a for a in answers if a["metadata"]["visual_tokens"] != []]
        assert with_image and all(a["metadata"]["visual_tokens"] == 5 * 29 for a in with_image), bench
        assert all(a["metadata"]["anyres_mode"] == "paper" for a in answers), bench


def test_two_gpu_run_with_a_duplicated_answer_stops_before_scoring(next_ckpt, pope_root):
    """CUDA_VISIBLE_DEVICES=0,1: two torchrun ranks (CPU here) answer one question each and rank 0 merges them.
    A rank file that also holds the other rank's answer makes the rerun stop in the checked merge: exit 1,
    the question named, no merged file and no score record."""
    env = {**os.environ, "CKPT": next_ckpt, "DATA_ROOT": str(pope_root / "data"), "DEVICE": "cpu",
           "MAX_NEW_TOKENS": "2", "RESULTS": str(pope_root / "results"), "OMP_NUM_THREADS": "1",
           "ANYRES_MODE": "paper", "CUDA_VISIBLE_DEVICES": "0,1", "TOKENIZERS_PARALLELISM": "false"}
    _run("pope.sh", 29, env)
    folder = pope_root / "data" / "pope" / "answers" / "llava-v1.6-tiny-paper" / "k29"
    rank0, rank1 = (folder / f"merge.rank{r}-of-2.jsonl" for r in (0, 1))
    merged = [json.loads(x) for x in (folder / "merge.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in merged] == [0, 1]
    assert [json.loads(x)["question_id"] for x in rank0.read_text().splitlines()] == [0]
    record = pope_root / "results" / "pope" / "k29.json"
    assert record.is_file()
    record.unlink()
    rank1.write_text(rank1.read_text() + rank0.read_text())
    proc = subprocess.run(["bash", str(REPO / "scripts" / "v1_6" / "eval" / "pope.sh"), "29"], env=env,
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 question(s) are answered more than once" in proc.stderr
    assert "'0' in ['merge.rank0-of-2.jsonl', 'merge.rank1-of-2.jsonl']" in proc.stderr
    assert not record.exists() and not (folder / "merge.jsonl").exists()
