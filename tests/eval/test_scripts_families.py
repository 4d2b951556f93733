"""scripts/<family>/eval/*.sh: thin wrappers over scripts/v1_5/eval, run end to end on the tiny OneVision.

Every LLaVA-1.5 benchmark script has one counterpart per family, two lines over the shared machinery
(settings.sh -> family.sh -> common.sh); the OneVision POPE and ScienceQA scripts answer the mini data
with the chat template into the family's own folders, at most K visual tokens per image.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from llava.eval.make_mini_data import build_data_root

REPO = Path(__file__).resolve().parents[2]
V15 = REPO / "scripts" / "v1_5" / "eval"
FAMILIES = {"onevision": "llava-hf/llava-onevision-qwen2-7b-ov-hf", "qwen2_5_vl": "Qwen/Qwen2.5-VL-7B-Instruct",
            "qwen3_vl": "Qwen/Qwen3-VL-8B-Instruct"}
BENCHES = sorted(p.stem for p in V15.glob("*.sh") if p.stem not in ("common", "family"))


def test_every_benchmark_has_a_two_line_script_per_family():
    assert len(BENCHES) == 12
    for family, ckpt in FAMILIES.items():
        folder = REPO / "scripts" / family / "eval"
        assert sorted(p.stem for p in folder.glob("*.sh")) == sorted([*BENCHES, "settings"])
        settings = (folder / "settings.sh").read_text()
        assert f"FAMILY={family}\n" in settings and f"FAMILY_CKPT={ckpt}\n" in settings
        for bench in BENCHES:
            code = [line for line in (folder / f"{bench}.sh").read_text().splitlines() if not line.startswith("#")]
            assert code == ['source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"',
                            f'exec bash "$V15_EVAL/{bench}.sh" "$@"'], (family, bench)


def test_a_family_script_needs_k():
    proc = subprocess.run(["bash", str(REPO / "scripts" / "onevision" / "eval" / "pope.sh")], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 2 and "error: give K" in proc.stderr


@pytest.fixture(scope="module")
def ov_ckpt(tmp_path_factory) -> str:
    from llava.model.family_onevision import save_tiny_onevision

    return str(save_tiny_onevision(tmp_path_factory.mktemp("ov") / "llava-onevision-tiny",
                                   vision_aspect_ratio="anyres_max_2"))


def test_onevision_scripts_answer_with_the_chat_template_into_their_own_folders(ov_ckpt, tmp_path):
    from test_scripts_v1_5 import ANSWERS, read_answers, run_scripts, script_env

    data_root, results = tmp_path / "data", tmp_path / "results"
    counts = build_data_root(data_root)
    env = script_env(ov_ckpt, data_root, results, MAX_NEW_TOKENS="2")
    env.pop("RESULTS")  # the family's default score folder: outputs/results/onevision-<ckpt name>
    benches = ["pope", "sqa"]
    logs = run_scripts(benches, 64, env, tmp_path, scripts=REPO / "scripts" / "onevision" / "eval")
    for bench in benches:
        assert logs[bench].returncode == 0, (tmp_path / "logs" / f"{bench}.err").read_text()[-3000:]
        folder = data_root / ANSWERS[bench].format(run="onevision-llava-onevision-tiny", k=64)
        answers = read_answers(folder / "merge.jsonl")
        assert len(answers) == counts[bench]
        for a in answers:
            meta = a["metadata"]
            assert meta["conv_mode"] is None and meta["visual_token_num"] == 64
            assert meta["visual_tokens"] == [] or meta["visual_tokens"] <= 64 < meta["visual_tokens_unpruned"]
    scores = sorted(p.relative_to(tmp_path) for p in (tmp_path / "outputs" / "results").rglob("*.json"))
    assert scores == [Path("outputs/results/onevision-llava-onevision-tiny/pope/k64.json"),
                      Path("outputs/results/onevision-llava-onevision-tiny/sqa/k64.json")]
