"""Scaling the evaluation: torchrun ranks, kill and resume, uneven shards, the merge checks, the K sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.eval.distributed import World
from llava.eval.merge import MergeError, merge_answers
from llava.eval.merge import main as merge_main
from llava.eval.model_vqa_loader import main
from llava.eval.runner import answers_paths, balanced_chunk, parse_visual_token_num
from llava.eval.sharding import find_shards, shard_path

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
TOKENS = "12"  # new tokens per answer: enough for a run to be caught mid-way, little enough to be fast


def _write_questions(path: Path) -> Path:
    """Six questions over the three samples; two share a question_id, as MME's do."""
    rows = [{"question_id": f"q{i}", "image": name, "text": f"What is in picture {i}?"}
            for i, name in enumerate(["shapes.png", "stripes.png", "scene.png", "stripes.png"])]
    rows += [{"question_id": "count/scene.png", "image": "scene.png", "text": "Is there one house?"},
             {"question_id": "count/scene.png", "image": "scene.png", "text": "Are there two houses?"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _flags(tiny_path, questions, answers, *extra) -> list[str]:
    return ["--model-path", tiny_path, "--question-file", str(questions), "--image-folder", str(SAMPLES),
            "--answers-file", str(answers), "--conv-mode", "vicuna_v1", "--temperature", "0",
            "--max_new_tokens", TOKENS, "--device", "cpu", *extra]


def _read(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _texts(records) -> list[tuple]:
    return [(r["question_id"], r["prompt"], r["text"]) for r in records]


def _torchrun(args: list[str], **popen) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "llava.eval.model_vqa_loader", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def _finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-4000:]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One CPU thread, as torchrun gives each rank: two spinning threads on a busy 2-core box are slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tiny_path, tmp_path_factory):
    """The questions and single-process answers at K = 58 and K = 29, in question order.

    One process writes its answers grouped by image (the runner's order); the merge of several ranks
    writes them in question order, so the reference is put in question order here.
    """
    root = tmp_path_factory.mktemp("scale_ref")
    questions = _write_questions(root / "q.jsonl")
    order = [(r["question_id"], r["text"]) for r in _read(questions)]
    answers = {}
    for k in (58, 29):
        main(_flags(tiny_path, questions, root / f"k{k}.jsonl", "--visual-token-num", str(k)))
        written = _read(root / f"k{k}.jsonl")
        assert [r["question_id"] for r in written] == ["q0", "q1", "q3", "q2", "count/scene.png", "count/scene.png"]
        answers[k] = sorted(written, key=lambda r: order.index((r["question_id"], r["prompt"])))
    return questions, answers


def test_two_ranks_equal_one_process(tiny_path, reference, tmp_path):
    questions, ref = reference
    # a 2-rank K sweep: 3 + 3 questions per rank, one file per K merged by rank 0
    _finish(_torchrun(_flags(tiny_path, questions, tmp_path / "a.jsonl", "--visual-token-num", "58,29")))
    for k in (58, 29):
        merged = _read(tmp_path / f"a_k{k}.jsonl")
        assert _texts(merged) == _texts(ref[k])
        # the same metadata, except which path ran: sharding may leave a rank one question of an image,
        # which takes the plain path (shared_prefix false) where one process shares; the answers are equal
        strip = lambda records: [{m: v for m, v in r["metadata"].items() if m != "shared_prefix"}  # noqa: E731
                                 for r in records]
        assert strip(merged) == strip(ref[k])
        shards = [_read(shard_path(tmp_path / f"a_k{k}.jsonl", r, 2)) for r in range(2)]
        assert [len(s) for s in shards] == [3, 3]
        assert [r["answer_id"] for s in shards for r in s] == [r["answer_id"] for r in merged]


def _kill_tree(pid: int) -> None:
    """SIGKILL a launcher and its workers (torchrun starts each worker in its own session)."""
    psutil = pytest.importorskip("psutil")
    procs = psutil.Process(pid).children(recursive=True) + [psutil.Process(pid)]
    for p in procs:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    psutil.wait_procs(procs, timeout=30)


def test_killed_run_resumes_without_duplicates_or_losses(tiny_path, reference, tmp_path):
    questions, ref = reference
    answers = tmp_path / "a.jsonl"
    args = _flags(tiny_path, questions, answers, "--visual-token-num", "58")
    proc = _torchrun(args)
    shard0 = Path(shard_path(answers, 0, 2))
    deadline = time.monotonic() + 180
    while not (shard0.exists() and shard0.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "rank 0 wrote no answer in time"
        time.sleep(0.005)
    _kill_tree(proc.pid)
    proc.communicate()
    before = [shard_path(answers, r, 2) for r in range(2)]
    done = sum(Path(p).read_text().count("\n") for p in before if Path(p).exists())
    assert 1 <= done < 6 and not answers.exists()  # killed mid-way, before any merge
    kept = [json.loads(line)["answer_id"] for line in shard0.read_text().splitlines(keepends=True)
            if line.endswith("\n")]

    _finish(_torchrun(args))
    merged = _read(answers)
    assert _texts(merged) == _texts(ref[58])  # every question once, in question order
    assert len({(r["question_id"], r["prompt"]) for r in merged}) == 6
    assert [r["answer_id"] for r in merged][: len(kept)] == kept  # answers from before the kill are kept


def test_nine_items_over_eight_ranks(tmp_path):
    items = [(f"q{i}", f"p{i}") for i in range(9)]
    worlds = [World.from_env({"RANK": str(r), "WORLD_SIZE": "8", "LOCAL_RANK": str(r % 4)}) for r in range(8)]
    shards = [w.shard(items) for w in worlds]
    assert [len(s) for s in shards] == [2, 1, 1, 1, 1, 1, 1, 1]
    assert [x for s in shards for x in s] == items  # contiguous, in order
    assert World.from_env({}) == World(0, 1, 0) and World.from_env({}).device("auto") == "cpu"
    with pytest.raises(ValueError, match="RANK=8 WORLD_SIZE=8"):
        World.from_env({"RANK": "8", "WORLD_SIZE": "8"})

    # every rank writes its shard file (rank 7 of 3 items: an empty one); rank 0 merges in question order
    out = tmp_path / "a.jsonl"
    for few in (items, items[:3]):
        for r in range(8):
            part = balanced_chunk(few, 8, r)
            Path(shard_path(out, r, 8)).write_text("".join(json.dumps(_record(q, p)) + "\n" for q, p in part))
        assert merge_answers(few, find_shards(out), out) == len(few)
        assert [(r["question_id"], r["prompt"]) for r in _read(out)] == few


def test_empty_shard_loads_no_model(tmp_path):
    """A rank with nothing to answer (more ranks than questions, or all done) only creates its file."""
    from argparse import Namespace

    from llava.eval.runner import _answer_shard

    args = Namespace(no_resume=False, model_path="/nonexistent")  # loading it would fail
    assert _answer_shard(args, [], {58: str(tmp_path / "a.rank7-of-8.jsonl")}, None, "cpu") == 0
    assert (tmp_path / "a.rank7-of-8.jsonl").read_text() == ""


def _record(qid, prompt, **meta) -> dict:
    metadata = {"visual_token_num": 58, "pruning_method": "fastervlm", "pruning_args": {}, "conv_mode": "vicuna_v1",
                "dtype": "float32", "visual_tokens": 58, **meta}
    return {"question_id": qid, "prompt": prompt, "text": "t", "answer_id": "x", "model_id": "m", "metadata": metadata}


def _shards(tmp_path, *parts) -> list[str]:
    paths = []
    for r, records in enumerate(parts):
        path = tmp_path / f"a.rank{r}-of-{len(parts)}.jsonl"
        path.write_text("".join(json.dumps(rec) + "\n" for rec in records))
        paths.append(str(path))
    return paths


def test_merge_detects_missing_duplicate_and_disagreeing_answers(tmp_path):
    keys = [(f"q{i}", "p") for i in range(30)] + [("q0", "another prompt")]  # MME-style reused id
    out = tmp_path / "a.jsonl"
    out.write_text("previous merge\n")

    # 25 missing: the message names the first 20 and the count
    shards = _shards(tmp_path, [_record(q, p) for q, p in keys[:3]], [_record(q, p) for q, p in keys[-3:]])
    with pytest.raises(MergeError, match=r"25 question\(s\) have no answer: \('q3', 'p'\), .*\(5 more\)"):
        merge_answers(keys, shards, out)

    few = keys[:4]
    shards = _shards(tmp_path, [_record(q, p) for q, p in few[:3]], [_record(q, p) for q, p in few[2:]])
    with pytest.raises(MergeError, match=r"1 question\(s\) are answered more than once: \('q2', 'p'\).*"
                                         r"a.rank0-of-2.jsonl', 'a.rank1-of-2.jsonl"):
        merge_answers(few, shards, out)

    shards = _shards(tmp_path, [_record(q, p) for q, p in few[:2]],
                     [_record(q, p, pruning_method="fastv", visual_token_num=29) for q, p in few[2:]])
    with pytest.raises(MergeError) as err:
        merge_answers(few, shards, out)
    assert ("disagree on metadata.visual_token_num: 58 in a.rank0-of-2.jsonl (2 answers); 29 in a.rank1"
            in str(err.value))
    assert 'metadata.pruning_method: "fastervlm" in a.rank0-of-2.jsonl' in str(err.value)

    shards = _shards(tmp_path, [_record(q, p) for q, p in few] + [_record("zz", "p")])
    with pytest.raises(MergeError, match=r"1 answer\(s\) match no question.*'zz'"):
        merge_answers(few, shards, out)
    assert out.read_text() == "previous merge\n"  # a failed merge leaves the old file alone
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

    Path(shards[0]).write_text(json.dumps(_record("q0", "p")) + "\n" + '{"question_id": "q1", "pro')
    with pytest.raises(MergeError, match="a.rank0-of-1.jsonl:2: not a complete answer record"):
        merge_answers(few, shards, out)


def test_merge_cli(tmp_path, capsys):
    qfile = tmp_path / "q.jsonl"
    qfile.write_text("".join(json.dumps({"question_id": i, "image": "x.png", "text": f"t{i}"}) + "\n"
                             for i in range(5)))
    _shards(tmp_path, [_record(i, f"t{i}") for i in (3, 4)], [_record(i, f"t{i}") for i in (0, 1, 2)])
    assert merge_main(["--question-file", str(qfile), "--answers-file", str(tmp_path / "a.jsonl")]) == 0
    assert [r["question_id"] for r in _read(tmp_path / "a.jsonl")] == [0, 1, 2, 3, 4]
    assert merge_main(["--question-file", str(qfile), "--answers-file", str(tmp_path / "b.jsonl"),
                       str(tmp_path / "a.rank0-of-2.jsonl")]) == 2
    assert "3 question(s) have no answer: ('0', 't0'), ('1', 't1'), ('2', 't2')" in capsys.readouterr().err
    # without a question file (ScienceQA / MMBench shards): rank order, duplicates still refused
    assert merge_main(["--answers-file", str(tmp_path / "c.jsonl"), str(tmp_path / "a.rank*-of-2.jsonl")]) == 0
    assert [r["question_id"] for r in _read(tmp_path / "c.jsonl")] == [3, 4, 0, 1, 2]
    assert merge_main(["--answers-file", str(tmp_path / "c.jsonl"), *[str(tmp_path / "a.rank1-of-2.jsonl")] * 2]) == 2
    assert "3 question(s) are answered more than once" in capsys.readouterr().err
    (tmp_path / "a.rank0-of-3.jsonl").write_text("")
    assert merge_main(["--question-file", str(qfile), "--answers-file", str(tmp_path / "a.jsonl")]) == 2
    assert "several world sizes [2, 3]" in capsys.readouterr().err


def test_sweep_equals_single_runs(tiny_path, tmp_path, monkeypatch):
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower

    qfile = _write_questions(tmp_path / "q.jsonl")
    # and a text-only question first: answered once per batch, its text reused for every K
    qfile.write_text(json.dumps({"question_id": "text", "text": "Name a colour."}) + "\n" + qfile.read_text())
    singles = {}
    for k in (576, 58, 29):
        main(_flags(tiny_path, qfile, tmp_path / f"one{k}.jsonl", "--visual-token-num", str(k), "--batch-size", "3",
                    "--allow-text-only"))
        singles[k] = _read(tmp_path / f"one{k}.jsonl")

    calls = []
    forward = CLIPVisionTower.forward
    # the tower's image rows per call
    monkeypatch.setattr(CLIPVisionTower, "forward",
                        lambda self, images, **kw: calls.append(images.shape[0]) or forward(self, images, **kw))
    sweep = ["--visual-token-num", "576,58,29", "--batch-size", "3", "--allow-text-only"]
    main(_flags(tiny_path, qfile, tmp_path / "sweep_{k}.jsonl", *sweep))
    # 7 questions (grouped: text, shapes, stripes x2, scene x3) in 3 batches of 3: each of the 3 images
    # goes through the tower once, for every K and every batch (the third batch is all cached)
    assert calls == [2, 1]
    for k in (576, 58, 29):
        got = _read(tmp_path / f"sweep_{k}.jsonl")
        assert _texts(got) == _texts(singles[k])
        assert [r["metadata"] for r in got] == [r["metadata"] for r in singles[k]]
        assert got[1]["metadata"]["visual_token_num"] == k and got[1]["metadata"]["visual_tokens"] == k
        assert got[0]["metadata"]["visual_tokens"] == []  # the text-only question

    # resume per K, as a kill between two K files leaves them: K = 576 complete, K = 58 without its last
    # two answers (one half-written), K = 29 without its last one
    k576, k58, k29 = (tmp_path / f"sweep_{k}.jsonl" for k in (576, 58, 29))
    full576, lines58, lines29 = k576.read_text(), k58.read_text().splitlines(True), k29.read_text().splitlines(True)
    k58.write_text("".join(lines58[:-2]) + lines58[-2][:30])
    k29.write_text("".join(lines29[:-1]))
    calls.clear()
    main(_flags(tiny_path, qfile, tmp_path / "sweep_{k}.jsonl", *sweep))
    assert calls == [1]  # the two questions left (both on scene.png) form one batch, encoded once for both Ks
    assert _texts(_read(k58)) == _texts(singles[58]) and k58.read_text().startswith("".join(lines58[:-2]))
    assert _texts(_read(k29)) == _texts(singles[29]) and k29.read_text().startswith("".join(lines29[:-1]))
    assert k576.read_text() == full576

    # --joint-sweep: each batch's Ks in one generate call; on CPU fp32 the same answers again
    calls.clear()
    main(_flags(tiny_path, qfile, tmp_path / "joint_{k}.jsonl", *sweep, "--joint-sweep"))
    assert calls == [2, 1]
    for k in (576, 58, 29):
        got = _read(tmp_path / f"joint_{k}.jsonl")
        assert _texts(got) == _texts(singles[k]) and [r["metadata"] for r in got] == [r["metadata"] for r in singles[k]]


def test_sweep_flag_and_file_names():
    assert parse_visual_token_num("58") == 58  # a single K stays an int
    assert parse_visual_token_num("576, 144,58") == (576, 144, 58)
    for bad in ("58,58", "0", "a,1", ""):
        with pytest.raises(Exception, match="K"):
            parse_visual_token_num(bad)
    assert answers_paths("out/a.jsonl", [58]) == {58: "out/a.jsonl"}  # unchanged for one K
    assert answers_paths("out/a.jsonl", [None]) == {None: "out/a.jsonl"}
    assert answers_paths("out/a.jsonl", [576, 58]) == {576: "out/a_k576.jsonl", 58: "out/a_k58.jsonl"}
    assert answers_paths("out/k{k}/merge.jsonl", [58, 29]) == {58: "out/k58/merge.jsonl", 29: "out/k29/merge.jsonl"}
    assert shard_path("out/a.jsonl", 3, 8) == "out/a.rank3-of-8.jsonl"


def test_sweep_with_anyres_views(tmp_path):
    """LLaVA-1.6 images are several views each, of different counts per image: the sweep's rows follow them."""
    from llava.model.tiny import save_tiny_next_checkpoint

    model = str(save_tiny_next_checkpoint(tmp_path / "next"))
    qfile = _write_questions(tmp_path / "q.jsonl")
    flags = lambda answers, *extra: _flags(model, qfile, tmp_path / answers, "--batch-size", "2", *extra)  # noqa: E731
    main(flags("one.jsonl", "--visual-token-num", "58"))
    main(flags("sweep_{k}.jsonl", "--visual-token-num", "576,58", "--joint-sweep"))
    assert _texts(_read(tmp_path / "sweep_58.jsonl")) == _texts(_read(tmp_path / "one.jsonl"))
    full = {k: _read(tmp_path / f"sweep_{k}.jsonl") for k in (576, 58)}
    for k, lost in ((58, 3), (576, 2)):  # resumed batches [q3, c1] and [c2]: K = 576 needs only c1 of the first
        lines = (tmp_path / f"sweep_{k}.jsonl").read_text().splitlines(keepends=True)
        (tmp_path / f"sweep_{k}.jsonl").write_text("".join(lines[:-lost]))
    main(flags("sweep_{k}.jsonl", "--visual-token-num", "576,58"))
    for k in (576, 58):
        assert _texts(_read(tmp_path / f"sweep_{k}.jsonl")) == _texts(full[k])
