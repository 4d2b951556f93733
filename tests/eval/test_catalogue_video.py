"""The video-QA catalogue records, their published numbers, and `prepare_hf` on tiny fake copies of
Video-LLaVA's GPT_Zero_Shot_QA folders (each benchmark's own layout, name prefix and extensions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.eval import catalogue, model_video_qa, prepare_hf
from llava.eval.catalogue import video_qa

# benchmark -> (video folder, file prefix, extension of the fake videos), as Video-LLaVA's scripts name them
LAYOUT = {"msvd": ("videos", "", ".avi"), "msrvtt": ("videos/all", "", ".mp4"), "tgif": ("mp4", "", ".mp4"),
          "activitynet": ("all_test", "v_", ".mp4")}


def test_video_records():
    assert catalogue.video_names() == ["activitynet", "msrvtt", "msvd", "tgif"]
    assert catalogue.video_columns() == ("TGIF-QA", "MSVD-QA", "MSRVTT-QA", "ActivityNet-QA")
    published = {r.columns[0]: r.published["Video-LLaVA-7B"] for r in catalogue.VIDEO_RECORDS}
    assert published == {"MSVD-QA": (70.7, 3.9), "MSRVTT-QA": (59.2, 3.5), "TGIF-QA": (70.0, 4.0),
                         "ActivityNet-QA": (45.3, 3.3)}
    for name, (folder, prefix, _) in LAYOUT.items():
        record = catalogue.get(name)
        assert (record.video_folder, record.video_prefix) == (folder, prefix)
        assert record.driver == "llava.eval.model_video_qa" and record.scorer == "llava.eval.eval_video_qa"
        assert record.folder.startswith("GPT_Zero_Shot_QA/") and catalogue.is_video(record.columns[0])
    assert catalogue.get("ANet") is video_qa.ACTIVITYNET and not catalogue.is_video("pope")
    assert "msvd" not in catalogue.names()  # the image table's records stay the twelve image benchmarks


def test_fastervlm_table_averages_follow_from_its_cells():
    """Each row's Average = the mean over the four benchmarks of % of the unpruned row (the paper's rule).

    Accuracies (counts over 1000 questions) reproduce to rounding; the table's scores are rounded to two
    decimals before we see them, which moves the score average by up to ~0.1 point."""
    rows = {(m, t): cells for m, t, cells in video_qa.FASTERVLM_VIDEO_TABLE}
    base = rows[("Video-LLaVA", 2048)]
    assert sorted({t for _, t in rows}) == [104, 208, 512, 1024, 1536, 2048]
    for key, cells in rows.items():
        acc = sum(100 * cells[c][0] / base[c][0] for c in base) / 4
        score = sum(100 * cells[c][1] / base[c][1] for c in base) / 4
        want_acc, want_score = video_qa.FASTERVLM_VIDEO_AVERAGES[key]
        assert acc == pytest.approx(want_acc, abs=0.006) and score == pytest.approx(want_score, abs=0.1), key
    assert video_qa.FASTERVLM_VIDEO_AVERAGES[("FasterVLM", 104)] == (89.28, 96.37)  # the 89.3 % / 96.4 %
    assert video_qa.FASTERVLM_VIDEO_AVERAGES[("FastV", 104)] == (82.00, 95.64)


def fake_copy(root: Path, bench: str, n: int = 4, qname: str = "test_q.json", missing: int | None = None) -> Path:
    """A fake Video-LLaVA folder: n questions on n // 2 videos, answers aligned, empty video files."""
    folder, prefix, ext = LAYOUT[bench]
    (root / folder).mkdir(parents=True)
    questions, answers = [], []
    for i in range(n):
        name = f"clip{i // 2}"
        qid = f"v_{name}_{i % 2}"
        questions.append({"video_name": name, "question": f"what happens {i}?", "question_id": qid})
        answers.append({"answer": f"ans{i}", "type": 3, "question_id": qid})
    for v in sorted({q["video_name"] for q in questions}):
        if missing is None or v != f"clip{missing}":
            (root / folder / f"{prefix}{v}{ext}").write_bytes(b"")
    (root / qname).write_text(json.dumps(questions))
    (root / qname.replace("_q", "_a", 1)).write_text(json.dumps(answers))
    return root


def prepare(bench, src, out, *extra):
    return prepare_hf.main(["--benchmark", bench, "--dataset", str(src), "--out-dir", str(out), "--no-progress",
                            *extra])


@pytest.mark.parametrize("bench", sorted(LAYOUT))
def test_prepare_resolves_each_benchmarks_video_names(tmp_path, bench):
    folder, prefix, ext = LAYOUT[bench]
    src = fake_copy(tmp_path / "src", bench)
    info = prepare(bench, src, tmp_path / "out", "--limit", "3")
    out = tmp_path / "out"
    questions = json.loads((out / "llava_test_q.json").read_text())
    answers = json.loads((out / "llava_test_a.json").read_text())
    assert [q["video_name"] for q in questions] == [f"{prefix}clip0{ext}", f"{prefix}clip0{ext}", f"{prefix}clip1{ext}"]
    assert [a["answer"] for a in answers] == ["ans0", "ans1", "ans2"]
    assert [a["question_id"] for a in answers] == [q["question_id"] for q in questions] == ["v_clip0_0", "v_clip0_1",
                                                                                         "v_clip1_0"]
    assert (out / folder).is_symlink() and (out / folder).resolve() == (src / folder).resolve()
    assert info["counts"] == {"questions": 3, "videos": 2, "source_questions": 3}
    # the driver reads the prepared files as they are: every video found, ground truth aligned
    items = model_video_qa.read_items(str(out / "llava_test_q.json"), str(out / "llava_test_a.json"),
                                      str(out / folder), num_samples=2)
    assert [(it.question_id, Path(it.video).name, it.answer) for it in items] == \
        [("v_clip0_0", f"{prefix}clip0{ext}", "ans0"), ("v_clip0_1", f"{prefix}clip0{ext}", "ans1")]


def test_prepare_in_place_and_fastervlm_1k_files(tmp_path):
    src = fake_copy(tmp_path / "MSVD_Zero_Shot_QA", "msvd", qname="test_q_1k.json")
    info = prepare("msvd", src, src)  # out-dir = the copy: nothing linked
    assert not (src / "videos").is_symlink() and info["counts"]["questions"] == 4
    assert info["files"]["question_file"] == str(src / "llava_test_q.json")


def test_prepare_refuses_missing_videos_and_misaligned_answers(tmp_path):
    src = fake_copy(tmp_path / "a", "activitynet", missing=1)
    with pytest.raises(FileNotFoundError, match=r"2 of 4 questions name a video that is not in .*all_test "
                                                r"\(e.g. question v_clip1_0: v_clip1"):
        prepare("activitynet", src, tmp_path / "out")
    info = prepare("activitynet", src, tmp_path / "out2", "--skip-missing-videos")
    assert info["counts"]["questions"] == 2 and "left out 2 question(s)" in info["notes"][0]
    bad = fake_copy(tmp_path / "b", "tgif")
    answers = json.loads((bad / "test_a.json").read_text())
    (bad / "test_a.json").write_text(json.dumps(answers[::-1]))
    with pytest.raises(ValueError, match=r"test_a.json\[0\] answers question v_clip1_1, but question 0 is v_clip0_0"):
        prepare("tgif", bad, tmp_path / "out3")
    with pytest.raises(ValueError, match="pass --dataset, the local copy of Video-LLaVA's GPT_Zero_Shot_QA/"):
        prepare_hf.main(["--benchmark", "msrvtt", "--out-dir", str(tmp_path / "o")])
