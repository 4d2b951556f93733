"""The benchmark shell scripts (scripts/v1_5/eval/*.sh) end to end on the tiny model.

The mini data root of `llava.eval.make_mini_data` (LLaVA's playground/data/eval layout) holds 2-4
questions per benchmark with the sample images and minimal ground-truth files in the formats the
scorers read. Every script runs once at K=58 (module fixture); the tests then check the merged
answers (one line per question, metadata visual_tokens 58), the score record or the submission file,
resuming, the multi-GPU split (torchrun ranks), the merge checks that stop a script before scoring,
FRESH=1, the GPT-judge branch of mmvet.sh / llavabench.sh (against a local fake judge, never the
network), and the paper table built by `llava.eval.summarize`.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from llava.eval.make_mini_data import build_data_root

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "v1_5" / "eval"
K = 58
RUN = "llava-v1.5-tiny"  # the answers sub-folder: the checkpoint's folder name (default method)


# Where each script writes its merged answers (relative to DATA_ROOT; {run} = answers sub-folder, {k} = K).
ANSWERS = {
    "pope": "pope/answers/{run}/k{k}",
    "mme": "MME/answers/{run}/k{k}",
    "textvqa": "textvqa/answers/{run}/k{k}",
    "gqa": "gqa/answers/llava_gqa_testdev_balanced/{run}/k{k}",
    "vqav2": "vqav2/answers/llava_vqav2_mscoco_test-dev2015/{run}/k{k}",
    "vizwiz": "vizwiz/answers/test/{run}/k{k}",
    "seed": "seed_bench/answers/{run}/k{k}",
    "sqa": "scienceqa/answers/{run}/k{k}",
    "mmbench": "mmbench/answers/mmbench_dev_20230712/{run}/k{k}",
    "mmbench_cn": "mmbench_cn/answers/mmbench_dev_cn_20231003/{run}/k{k}",
    "mmvet": "mm-vet/answers/{run}/k{k}",
    "llavabench": "llava-bench-in-the-wild/answers/{run}/k{k}",
}
# Score record (under RESULTS) or server-submission / converted file (under DATA_ROOT) each script leaves.
OUTPUTS = {
    "pope": ("results", "POPE"), "mme": ("results", "MME"), "textvqa": ("results", "TextVQA"),
    "gqa": ("results", "GQA"), "seed": ("results", "SEED"), "sqa": ("results", "SQA-IMG"),
    "mmbench": ("results", "MMB"), "mmbench_cn": ("results", "MMB-CN"),
    "mmvet": ("results", "MM-Vet"), "llavabench": ("results", "LLaVA-Bench"),
    "vqav2": ("data", "vqav2/answers_upload/llava_vqav2_mscoco_test-dev2015/{run}/k{k}.json"),
    "vizwiz": ("data", "vizwiz/answers_upload/test/{run}/k{k}.json"),
}


# ----------------------------------------------------------------------------- running the scripts


# Settings of the scripts that must not leak in from the environment the tests run in.
SCRIPT_SETTINGS = {
    "CUDA_VISIBLE_DEVICES", "OPENAI_API_KEY", "OPENAI_BASE_URL", "FRESH", "RUN_NAME", "METHOD", "METHOD_ARGS",
    "EXTRA_ARGS", "BATCH_SIZE", "CONV_MODE", "FAMILY", "JUDGE_RUNS", "JUDGE_MODEL", "MMVET_PROMPT_FILE", "MMVET_GRADE_FILE",
    "RULE_FILE", "LLAVABENCH_REVIEWS", "VQAV2_SPLIT", "VQAV2_IMAGES", "VQAV2_ANNOTATION", "VQAV2_UPLOAD_QUESTIONS",
    "GQA_SPLIT", "GQA_QUESTIONS_JSON", "VIZWIZ_SPLIT", "TEXTVQA_QUESTIONS", "POPE_LABELS", "MME_GT",
    "MMBENCH_SPLIT", "MMBENCH_CN_SPLIT",
}


def script_env(tiny_path: str, data_root: Path, results: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_SETTINGS}
    # The scripts run from a temporary folder: this checkout's llava must come first, not an installed copy.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update({"CKPT": tiny_path, "DATA_ROOT": str(data_root), "RESULTS": str(results), "DEVICE": "cpu",
                "DTYPE": "float32", "MAX_NEW_TOKENS": "4", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
                "TOKENIZERS_PARALLELISM": "false"})
    env.update(extra)
    return env


def _command(bench: str, k: int | str, scripts: Path = SCRIPTS) -> list[str]:
    return ["bash", str(scripts / f"{bench}.sh"), str(k)]


def _check(bench: str, k, result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        pytest.fail(f"{bench}.sh {k} exited {result.returncode}\n--- stdout\n{result.stdout[-4000:]}\n"
                    f"--- stderr\n{result.stderr[-6000:]}")
    return result


def run_script(bench: str, k: int | str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run one script; a non-zero exit fails the test with the script's output."""
    return _check(bench, k, subprocess.run(_command(bench, k), env=env, cwd=cwd, capture_output=True, text=True,
                                           timeout=600))


def run_scripts(benches: list[str], k: int, env: dict, cwd: Path, workers: int = 2, timeout: float = 600,
                scripts: Path = SCRIPTS) -> dict:
    """Run several scripts, `workers` at a time; returns each one's CompletedProcess (failures included).

    A script still running after `timeout` seconds is killed (with its process group) and reported as failed.
    """
    pending, running, done = list(benches), {}, {}
    logs = cwd / "logs"
    logs.mkdir(exist_ok=True)
    while pending or running:
        while pending and len(running) < workers:
            bench = pending.pop(0)
            out, err = (open(logs / f"{bench}.{s}", "w+", encoding="utf-8") for s in ("out", "err"))
            proc = subprocess.Popen(_command(bench, k, scripts), env=env, cwd=cwd, stdout=out, stderr=err,
                                    start_new_session=True)
            running[bench] = (proc, out, err, time.monotonic())
        for bench, (proc, out, err, started) in list(running.items()):
            if proc.poll() is None:
                if time.monotonic() - started < timeout:
                    continue
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.seek(0), err.seek(0)
            done[bench] = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
            out.close(), err.close()
            del running[bench]
        if running:
            time.sleep(0.1)
    return done


def read_answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class _FakeJudge(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions stand-in: reviews get "8 6", MM-Vet grades get "0.5"."""

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        review = any(m["role"] == "system" for m in body["messages"])
        reply = json.dumps({"choices": [{"message": {"content": "8 6\nBoth fine." if review else "0.5"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def suite(tiny_path, tmp_path_factory):
    """The mini data root and every script run once at K=58 (two at a time; each run's output kept).

    OPENAI_API_KEY and OPENAI_BASE_URL point at a local fake judge, so mmvet.sh and llavabench.sh run
    their GPT-judge branch end to end without any network access.
    """
    base = tmp_path_factory.mktemp("scripts_v1_5")
    data_root, results = base / "data", base / "results"
    counts = build_data_root(data_root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = script_env(tiny_path, data_root, results, OPENAI_API_KEY="sk-test-not-a-key",
                     OPENAI_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}/v1", NO_PROXY="127.0.0.1,localhost",
                     no_proxy="127.0.0.1,localhost")
    try:
        logs = run_scripts(list(counts), K, env, base)
    finally:
        server.shutdown()
        server.server_close()
    for key in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        env.pop(key)
    yield {"base": base, "data": data_root, "results": results, "counts": counts, "env": env, "logs": logs}


def answers_file(suite, bench: str, k: int = K, run: str = RUN) -> Path:
    return suite["data"] / ANSWERS[bench].format(run=run, k=k) / "merge.jsonl"


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("bench", sorted(ANSWERS))
def test_script_answers_and_scores(suite, bench):
    _check(bench, K, suite["logs"][bench])
    answers = read_answers(answers_file(suite, bench))
    assert len(answers) == suite["counts"][bench], f"{bench}: one answer line per question"
    with_image = [a for a in answers if a["metadata"].get("visual_tokens") != []]
    assert with_image and all(a["metadata"]["visual_tokens"] == K for a in with_image)
    assert all(a["metadata"]["visual_token_num"] == K and a["metadata"]["pruning_method"] == "fastervlm"
               for a in answers)
    assert all(a["model_id"] == RUN for a in answers)
    where, what = OUTPUTS[bench]
    if where == "results":
        record = json.loads((suite["results"] / bench / f"k{K}.json").read_text())
        assert record["benchmark"] == what and record["k"] == K and isinstance(record["headline"], float)
    else:
        upload = json.loads((suite["data"] / what.format(run=RUN, k=K)).read_text())
        assert len(upload) == suite["counts"][bench]
        assert "EvalAI" in suite["logs"][bench].stderr


def test_sqa_text_only_problem_has_no_visual_tokens(suite):
    _check("sqa", K, suite["logs"]["sqa"])
    by_id = {str(a["question_id"]): a for a in read_answers(answers_file(suite, "sqa"))}
    assert by_id["12"]["metadata"]["visual_tokens"] == [] and by_id["11"]["metadata"]["visual_tokens"] == K
    record = json.loads((suite["results"] / "sqa" / f"k{K}.json").read_text())
    assert set(record["metrics"]) >= {"accuracy", "img_accuracy"}


def test_side_files_and_summaries(suite):
    """Converted / upload files, and the GPT-judge branch (fake judge: every review 8 vs 6, every grade 0.5)."""
    for bench in ("llavabench", "mmvet", "mmbench", "seed", "mme"):
        _check(bench, K, suite["logs"][bench])
    reviews = read_answers(suite["data"] / "llava-bench-in-the-wild" / "reviews" / RUN / f"k{K}.jsonl")
    assert [r["tuple"] for r in reviews] == [[8.0, 6.0]] * 3
    bench = json.loads((suite["results"] / "llavabench" / f"k{K}.json").read_text())
    assert bench["headline"] == pytest.approx(75.0)
    grades = json.loads((suite["data"] / "mm-vet" / "results" / RUN / f"k{K}_grade-1runs.json").read_text())
    assert sorted(grades) == ["v1_0", "v1_1"] and all(g["score"] == [0.5] for g in grades.values())
    mmvet = json.loads((suite["results"] / "mmvet" / f"k{K}.json").read_text())
    assert mmvet["headline"] == pytest.approx(50.0)
    converted = json.loads((suite["data"] / "mm-vet" / "results" / RUN / f"k{K}.json").read_text())
    assert sorted(converted) == ["v1_0", "v1_1"]
    assert (suite["data"] / "mmbench" / "answers_upload" / "mmbench_dev_20230712" / RUN / f"k{K}.xlsx").is_file()
    assert (suite["data"] / "seed_bench" / "answers_upload" / RUN / f"k{K}.jsonl").is_file()
    assert (suite["data"] / "MME" / "answers" / RUN / f"k{K}" / "eval_tool" / "existence.txt").is_file()


def test_rerun_resumes_without_duplicates(suite):
    """Rerunning pope.sh after a killed run (chunk file cut mid-line) completes it: every question once,
    the answers already there kept as they were, and the score record rewritten."""
    _check("pope", K, suite["logs"]["pope"])
    path = answers_file(suite, "pope")
    before = read_answers(path)
    chunk = path.with_name("1_0.jsonl")
    lines = chunk.read_text().splitlines(keepends=True)
    chunk.write_text("".join(lines[:2]) + lines[2][:25])
    survivors = [json.loads(line)["question_id"] for line in lines[:2]]  # the chunk is in image order
    record = suite["results"] / "pope" / f"k{K}.json"
    record.unlink()
    run_script("pope", K, suite["env"], suite["base"])
    after = read_answers(path)
    assert [a["question_id"] for a in after] == [a["question_id"] for a in before]
    answer_id = lambda answers: {a["question_id"]: a["answer_id"] for a in answers}  # noqa: E731
    assert [answer_id(after)[q] for q in survivors] == [answer_id(before)[q] for q in survivors]
    assert [a["text"] for a in after] == [a["text"] for a in before]
    assert record.is_file()


def test_fresh_and_chunks_per_gpu(suite):
    """FRESH=1 with CUDA_VISIBLE_DEVICES=0,1: the old answers go, two torchrun ranks answer their parts (on
    the CPU here) and rank 0 merges them in question order, with the same answers as the single-chunk run."""
    _check("textvqa", K, suite["logs"]["textvqa"])
    folder = answers_file(suite, "textvqa").parent
    single = read_answers(folder / "merge.jsonl")
    run_script("textvqa", K, {**suite["env"], "CUDA_VISIBLE_DEVICES": "0,1", "FRESH": "1"}, suite["base"])
    assert sorted(p.name for p in folder.glob("*.jsonl")) == [
        "merge.jsonl", "merge.rank0-of-2.jsonl", "merge.rank1-of-2.jsonl"]
    assert [len(read_answers(folder / f"merge.rank{i}-of-2.jsonl")) for i in (0, 1)] == [2, 1]
    merged = read_answers(folder / "merge.jsonl")
    assert [(a["question_id"], a["prompt"], a["text"]) for a in merged] == \
        [(a["question_id"], a["prompt"], a["text"]) for a in single]
    assert {a["answer_id"] for a in merged}.isdisjoint(a["answer_id"] for a in single)


def _fails_before_scoring(bench: str, env: dict, suite, match: str) -> subprocess.CompletedProcess:
    """Rerun `bench`.sh, expecting it to stop in the merge: exit 1, `match` in stderr, no merged file, no score."""
    record = suite["results"] / bench / f"k{K}.json"
    record.unlink(missing_ok=True)
    proc = subprocess.run(_command(bench, K), env=env, cwd=suite["base"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert match in proc.stderr, proc.stderr[-3000:]
    assert not record.exists(), "a score was written from unchecked answers"
    return proc


def test_chunked_run_with_a_duplicated_answer_fails_before_scoring(suite):
    """A rank's shard that also holds an answer of another rank's question (a copied or mixed-up file):
    the rerun resumes both shards (nothing left to answer), then rank 0's checked merge refuses them,
    naming the question, and the script stops before the scorer; no merged file is left to score by hand."""
    _check("pope", K, suite["logs"]["pope"])
    env = {**suite["env"], "CUDA_VISIBLE_DEVICES": "0,1"}
    run_script("pope", K, {**env, "FRESH": "1"}, suite["base"])
    folder = answers_file(suite, "pope").parent
    rank0, rank1 = (folder / f"merge.rank{r}-of-2.jsonl" for r in (0, 1))
    assert len(read_answers(folder / "merge.jsonl")) == suite["counts"]["pope"]
    first = rank0.read_text().splitlines(keepends=True)[0]
    rank1.write_text(rank1.read_text() + first)
    qid = json.loads(first)["question_id"]
    proc = _fails_before_scoring("pope", env, suite, "answered more than once")
    assert f"{str(qid)!r} in ['merge.rank0-of-2.jsonl', 'merge.rank1-of-2.jsonl']" in proc.stderr
    assert not (folder / "merge.jsonl").exists()
    rank1.write_text("".join(rank1.read_text().splitlines(keepends=True)[:-1]))  # repaired: the rerun merges
    run_script("pope", K, env, suite["base"])
    assert len(read_answers(folder / "merge.jsonl")) == suite["counts"]["pope"]


def test_single_chunk_with_a_foreign_or_duplicated_answer_fails_before_scoring(suite):
    """One chunk: `python -m llava.eval.merge --question-file` checks the chunk file before anything is scored
    (a duplicate line, or an answer to a question that is not in the question file)."""
    _check("gqa", K, suite["logs"]["gqa"])
    folder = answers_file(suite, "gqa").parent
    chunk = folder / "1_0.jsonl"
    good = chunk.read_text()
    lines = good.splitlines(keepends=True)
    try:
        chunk.write_text(good + lines[0])
        _fails_before_scoring("gqa", suite["env"], suite, "answered more than once")
        foreign = json.loads(lines[0])
        foreign["question_id"] = "999999"
        chunk.write_text(good + json.dumps(foreign) + "\n")
        _fails_before_scoring("gqa", suite["env"], suite, "match no question of the list")
        assert not (folder / "merge.jsonl").exists()
    finally:
        chunk.write_text(good)
    run_script("gqa", K, suite["env"], suite["base"])
    assert (suite["results"] / "gqa" / f"k{K}.json").is_file()


def test_other_method_and_bad_input(suite):
    """Another method answers into its own folder and results dir; a bad K or missing data stops early."""
    env = {**suite["env"], "METHOD": "random", "METHOD_ARGS": "seed=1"}
    env.pop("RESULTS")
    run_script("gqa", K, env, suite["base"])
    run = f"{RUN}-random-seed=1"
    answers = read_answers(answers_file(suite, "gqa", run=run))
    assert len(answers) == suite["counts"]["gqa"]
    assert {a["metadata"]["pruning_method"] for a in answers} == {"random"}
    assert all(a["metadata"]["pruning_args"] == {"seed": 1} and a["metadata"]["visual_tokens"] == K for a in answers)
    record = json.loads((suite["base"] / "outputs" / "results" / run / "gqa" / f"k{K}.json").read_text())
    assert record["benchmark"] == "GQA" and record["k"] == K
    bad = subprocess.run(_command("pope", "0"), env=suite["env"], cwd=suite["base"], capture_output=True, text=True)
    assert bad.returncode == 2 and "positive integer" in bad.stderr
    missing = subprocess.run(_command("pope", K), cwd=suite["base"], capture_output=True, text=True,
                             env={**suite["env"], "DATA_ROOT": str(suite["base"] / "nowhere")})
    assert missing.returncode == 1 and "prepare_hf --benchmark pope" in missing.stderr


def test_summarize_builds_the_paper_table(suite):
    """A K=576 run of pope.sh next to the K=58 runs: the paper table has a baseline row and an Avg column."""
    run_script("pope", 576, suite["env"], suite["base"])
    answers = read_answers(answers_file(suite, "pope", k=576))
    assert {a["metadata"]["visual_tokens"] for a in answers} == {576}
    table = subprocess.run([sys.executable, "-m", "llava.eval.summarize", str(suite["results"])],
                           capture_output=True, text=True, check=True).stdout
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| K"))
    assert [c.strip() for c in header.strip("|").split("|")][-1] == "Avg"
    assert "POPE" in header and "GQA" in header
    assert any(line.startswith("| 576 (baseline)") for line in lines)
    row58 = next(line for line in lines if line.startswith(f"| {K} "))
    assert row58.rstrip(" |").endswith("%")
