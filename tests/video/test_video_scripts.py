"""scripts/video/eval/{msvd,msrvtt,tgif,activitynet}.sh end to end on the tiny Video-LLaVA, generated
videos and a local fake judge (never the network): data prepared by prepare_hf from fake copies of
Video-LLaVA's folders, answers at K=full and K=13 per frame, judgements, score records, and the video
table of `summarize --video`; then a resumed rerun, a run without a judge, and a bad K."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from judge_server import FakeJudge, field
from llava.eval import prepare_hf, summarize
from llava.eval.catalogue import video_qa

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "video" / "eval"
BENCHES = ("msvd", "msrvtt", "tgif", "activitynet")
# Every script at K=13 per frame; two of them also unpruned (K=full), for the table's baselines.
JOBS = [(b, "13") for b in BENCHES] + [("tgif", "full"), ("msvd", "full")]
KEY = "sk-video-test-key-must-not-be-written"
RUN = "video-llava-tiny-hf"
# benchmark -> (video folder, file prefix, extension): each benchmark's own layout
LAYOUT = {"msvd": ("videos", "", ".mkv"), "msrvtt": ("videos/all", "", ".mp4"), "tgif": ("mp4", "", ".mp4"),
          "activitynet": ("all_test", "v_", ".mp4")}


def judge_rule(question: str, prediction: str) -> tuple[str, int]:
    """The fake judge: deterministic, from the texts alone, never 0 % accuracy on a question set."""
    yes = question.endswith("0?") or len(prediction) % 2 == 0
    return ("yes" if yes else "no"), 1 + len(prediction) % 5


def fake_judge(body: dict, n: int) -> str:
    pred, score = judge_rule(field(body, "Question"), field(body, "Predicted answer"))
    return f"{{'pred': '{pred}', 'score': {score}}}"


def fake_copy(root: Path, bench: str, videos: list[Path]) -> Path:
    folder, prefix, ext = LAYOUT[bench]
    (root / folder).mkdir(parents=True)
    source = videos[0] if ext == ".mkv" else videos[2]  # the ffv1 .mkv or the mpeg4 .mp4 fixture
    questions = [{"video_name": f"{bench}{i}", "question": f"what happens in clip {i}?", "question_id": f"v_{bench}{i}"}
                 for i in range(2)]
    for q in questions:
        shutil.copy(source, root / folder / f"{prefix}{q['video_name']}{ext}")
    (root / "test_q.json").write_text(json.dumps(questions))
    (root / "test_a.json").write_text(json.dumps([{"answer": "a square", "type": 3, "question_id": q["question_id"]}
                                                  for q in questions]))
    return root


def env_for(video_dir: Path, data: Path, results: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "JUDGE_")) and k not in {"CUDA_VISIBLE_DEVICES", "FRESH", "RUN_NAME",
                                                                     "METHOD", "METHOD_ARGS", "EXTRA_ARGS"}}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.update({"CKPT": str(video_dir), "DATA_ROOT": str(data), "RESULTS": str(results), "DEVICE": "cpu",
                "DTYPE": "float32", "MAX_NEW_TOKENS": "3", "BATCH_SIZE": "2", "PYTHON": sys.executable,
                "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "NO_PROXY": "127.0.0.1",
                "no_proxy": "127.0.0.1", **extra})
    return env


def run_all(jobs: list[tuple[str, str]], env: dict, cwd: Path, workers: int = 2) -> dict:
    """Run (bench, K) scripts `workers` at a time; returns each one's CompletedProcess."""
    pending, running, done = list(jobs), {}, {}
    while pending or running:
        while pending and len(running) < workers:
            job = pending.pop(0)
            running[job] = subprocess.Popen(["bash", str(SCRIPTS / f"{job[0]}.sh"), job[1]], env=env, cwd=cwd,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for job, proc in list(running.items()):
            if proc.poll() is not None:
                out, err = proc.communicate()
                done[job] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
                del running[job]
        time.sleep(0.1)
    return done


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if result.returncode != 0:
        pytest.fail(f"{result.args} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def suite(video_dir, videos, tmp_path_factory):
    base = tmp_path_factory.mktemp("video_scripts")
    data, results = base / "data", base / "results"
    for bench in BENCHES:
        record = video_qa.RECORDS[[r.name for r in video_qa.RECORDS].index(bench)]
        src = fake_copy(base / "copies" / bench, bench, videos)
        prepare_hf.main(["--benchmark", bench, "--dataset", str(src), "--out-dir", str(data / record.folder),
                         "--no-progress"])
    with FakeJudge(fake_judge) as judge:
        env = env_for(video_dir, data, results, JUDGE_BASE_URL=judge.url, OPENAI_API_KEY=KEY)
        logs = run_all(JOBS, env, base)
        yield {"base": base, "data": data, "results": results, "logs": logs, "judge": judge, "env": env,
               "video_dir": video_dir}


def merged(suite, bench: str, k: str) -> list[dict]:
    folder = video_qa.RECORDS[[r.name for r in video_qa.RECORDS].index(bench)].folder
    path = suite["data"] / folder / "answers" / RUN / ("full" if k == "full" else f"k{k}") / "merge.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.parametrize("bench", BENCHES)
def test_each_script_answers_judges_and_records(suite, bench):
    for k in [k for b, k in JOBS if b == bench]:
        check(suite["logs"][(bench, k)])
        answers = merged(suite, bench, k)
        assert [a["question_id"] for a in answers] == [f"v_{bench}0", f"v_{bench}1"]
        assert all(a["answer"] == "a square" and a["metadata"]["num_frames"] == 8 for a in answers)
        tokens = 8 * 257 if k == "full" else 8 * 13  # unpruned: [CLS] + 256 patches per frame; else K per frame
        assert all(a["metadata"]["visual_tokens"] == tokens for a in answers)
        record = json.loads((suite["results"] / bench / f"{'full' if k == 'full' else 'k' + k}.json").read_text())
        assert record["benchmark"] == video_qa.RECORDS[[r.name for r in video_qa.RECORDS].index(bench)].columns[0]
        assert record["k"] == (None if k == "full" else 13) and record["visual_tokens"] == tokens
        judged = [judge_rule(a["prompt"], a["text"]) for a in answers]  # what the fake judge must have said
        assert record["headline"] == pytest.approx(100 * sum(p == "yes" for p, _ in judged) / 2)
        assert record["metrics"]["score"] == pytest.approx(sum(s for _, s in judged) / 2)
        assert (record["metrics"]["judged"], record["metrics"]["failed"]) == (2, 0)


def test_the_video_table(suite, capsys):
    for job in suite["logs"].values():
        check(job)
    table = summarize.main([str(suite["results"]), "--video", "--out", str(suite["base"] / "table"),
                            "--published", "FasterVLM"])
    assert table.runs == [("unpruned", None), ("fastervlm", 13)] and table.baseline == ("unpruned", None)
    assert table.columns == ["TGIF-QA", "MSVD-QA", "MSRVTT-QA", "ActivityNet-QA"]
    rel = []
    for bench, column in zip(("tgif", "msvd", "msrvtt", "activitynet"), table.columns):
        k13 = json.loads((suite["results"] / bench / "k13.json").read_text())
        assert table.cells[(("fastervlm", 13), column)] == (k13["headline"], k13["metrics"]["score"])
        if (bench, "full") not in JOBS:
            assert (("fastervlm", 13), column) not in table.relative  # no baseline: left out of Avg
            continue
        full = json.loads((suite["results"] / bench / "full.json").read_text())
        rel.append((100 * k13["headline"] / full["headline"], 100 * k13["metrics"]["score"] / full["metrics"]["score"]))
        assert table.relative[(("fastervlm", 13), column)] == pytest.approx(rel[-1])
    avg = table.avg[("fastervlm", 13)]
    assert len(rel) == 2 and avg == pytest.approx((sum(a for a, _ in rel) / 2, sum(s for _, s in rel) / 2))
    assert table.tokens == {("unpruned", None): 2056.0, ("fastervlm", 13): 104.0}
    markdown = (suite["base"] / "table.md").read_text()
    assert "| Video-LLaVA (unpruned) (baseline) | full | 0% | 2056 |" in markdown
    assert "| fastervlm | 13 | 95% | 104 |" in markdown and "| FasterVLM (FasterVLM paper) | 13 | - | 104 |" in markdown
    assert (suite["base"] / "table.csv").read_text().count("\n") == 3


def test_a_rerun_resumes_and_no_judge_keeps_the_answers(suite):
    before = len(suite["judge"].requests)
    check(subprocess.run(["bash", str(SCRIPTS / "msvd.sh"), "13"], env=suite["env"], cwd=suite["base"],
                         capture_output=True, text=True))
    assert len(suite["judge"].requests) == before  # every answer and judgement reused
    env = {k: v for k, v in suite["env"].items() if k not in {"JUDGE_BASE_URL", "OPENAI_API_KEY"}}
    env["RESULTS"] = str(suite["base"] / "no-judge")
    out = check(subprocess.run(["bash", str(SCRIPTS / "tgif.sh"), "13"], env=env, cwd=suite["base"],
                               capture_output=True, text=True))
    assert "judging needs OPENAI_API_KEY (OpenAI) or JUDGE_BASE_URL" in out.stderr
    assert not (suite["base"] / "no-judge").exists() and len(merged(suite, "tgif", "13")) == 2
    bad = subprocess.run(["bash", str(SCRIPTS / "tgif.sh"), "1x"], env=env, cwd=suite["base"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and ("must be a positive integer (tokens per frame) up to 256 (a frame's patches) or "
                                    "'full', got '1x'") in bad.stderr


def test_the_key_is_written_nowhere(suite):
    for job in suite["logs"].values():
        assert KEY not in job.stdout and KEY not in job.stderr
    assert suite["judge"].requests and all(r["headers"]["Authorization"] == f"Bearer {KEY}"
                                           for r in suite["judge"].requests)
    for path in suite["base"].rglob("*"):
        if path.is_file() and path.stat().st_size < 1 << 20:
            assert KEY not in path.read_text(errors="replace"), path
