"""model_vqa_loader end to end on the tiny model: batching, budgets, resume, sharding, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.eval.answers_writer import AnswerWriter, answered_ids
from llava.eval.model_vqa_loader import main
from llava.eval.runner import balanced_chunk

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"


def _questions(path: Path, n: int = 5) -> Path:
    names = ["shapes.png", "stripes.png", "scene.png"]
    path.write_text("".join(
        json.dumps({"question_id": f"q{i}", "image": names[i % 3], "text": f"Question number {i}?"}) + "\n"
        for i in range(n)))
    return path


def _run(tiny_path, questions, answers, *extra):
    main(["--model-path", tiny_path, "--question-file", str(questions), "--image-folder", str(SAMPLES),
          "--answers-file", str(answers), "--conv-mode", "vicuna_v1", "--temperature", "0",
          "--max_new_tokens", "6", "--device", "cpu", *extra])
    return [json.loads(line) for line in Path(answers).read_text().splitlines()]


def test_batch_size_does_not_change_answers(tiny_path, tmp_path):
    q = _questions(tmp_path / "q.jsonl")
    one = _run(tiny_path, q, tmp_path / "b1.jsonl", "--visual-token-num", "58")
    three = _run(tiny_path, q, tmp_path / "b3.jsonl", "--visual-token-num", "58", "--batch-size", "3")
    assert [a["text"] for a in one] == [a["text"] for a in three]
    # written grouped by image (shapes, stripes, scene), in question order within each image
    assert [a["question_id"] for a in one] == ["q0", "q3", "q1", "q4", "q2"]
    rec = one[0]
    assert list(rec)[:5] == ["question_id", "prompt", "text", "answer_id", "model_id"]
    assert rec["prompt"] == "Question number 0?" and rec["model_id"] == "llava-v1.5-tiny"
    assert rec["metadata"]["visual_token_num"] == 58 and rec["metadata"]["visual_tokens"] == 58
    assert rec["metadata"]["pruning_method"] == "fastervlm" and rec["metadata"]["vision_attn"] == "sdpa"
    assert rec["metadata"]["shared_prefix"] is True


def test_eager_vision_attention_is_recorded(tiny_path, tmp_path):
    q = _questions(tmp_path / "q.jsonl", n=2)
    eager = _run(tiny_path, q, tmp_path / "eager.jsonl", "--visual-token-num", "58", "--vision-attn", "eager")
    assert [a["metadata"]["vision_attn"] for a in eager] == ["eager", "eager"]
    assert all(a["metadata"]["visual_tokens"] == 58 for a in eager)
    with pytest.raises(SystemExit):
        _run(tiny_path, q, tmp_path / "bad.jsonl", "--vision-attn", "flash")


def test_resume_after_a_killed_run(tiny_path, tmp_path):
    q = _questions(tmp_path / "q.jsonl")
    full = _run(tiny_path, q, tmp_path / "full.jsonl")
    partial = tmp_path / "partial.jsonl"
    lines = (tmp_path / "full.jsonl").read_text().splitlines(keepends=True)
    partial.write_text("".join(lines[:2]) + lines[2][:25])  # killed mid-write of the third answer
    resumed = _run(tiny_path, q, partial)
    assert [a["question_id"] for a in resumed] == [a["question_id"] for a in full]
    assert [a["text"] for a in resumed] == [a["text"] for a in full]
    assert resumed[0]["answer_id"] == full[0]["answer_id"]  # kept, not regenerated
    again = _run(tiny_path, q, partial)  # nothing left to do
    assert len(again) == 5


def test_sharding_is_balanced_and_covers_everything(tiny_path, tmp_path):
    items = list(range(9))
    shards = [balanced_chunk(items, 8, i) for i in range(8)]
    assert sorted(x for s in shards for x in s) == items and {len(s) for s in shards} == {1, 2}
    assert balanced_chunk([1, 2], 4, 3) == []
    with pytest.raises(ValueError, match="--chunk-idx 4"):
        balanced_chunk(items, 4, 4)
    q = _questions(tmp_path / "q.jsonl", n=3)
    parts = [_run(tiny_path, q, tmp_path / f"c{i}.jsonl", "--num-chunks", "2", "--chunk-idx", str(i)) for i in (0, 1)]
    assert [a["question_id"] for p in parts for a in p] == ["q0", "q1", "q2"]


def test_missing_image_names_the_question(tiny_path, tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 7, "image": "nope.png", "text": "?"}) + "\n")
    with pytest.raises(FileNotFoundError, match=r"question 7: image file .*nope.png not found \(check --image-folder\)"):
        _run(tiny_path, q, tmp_path / "a.jsonl")


def test_corrupt_image_and_bad_question_line(tiny_path, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 3, "image": "bad.png", "text": "?"}) + "\n")
    with pytest.raises(ValueError, match="question 3: cannot read image 'bad.png'"):
        main(["--model-path", tiny_path, "--question-file", str(q), "--image-folder", str(tmp_path),
              "--answers-file", str(tmp_path / "a.jsonl"), "--device", "cpu"])
    q.write_text(json.dumps({"image": "x.png"}) + "\n")
    with pytest.raises(ValueError) as err:
        _run(tiny_path, q, tmp_path / "a.jsonl")
    assert str(err.value) == (f"{q}:1: the question has no 'question_id'; expected a row like "
                              '{"question_id": 1, "image": "a.jpg", "text": "What is shown?"}')


def test_answer_writer_repairs_tail_and_refuses_duplicates(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"question_id": 1, "prompt": "p", "text": "a"}\n{"question_id": 2, "prompt": "p", "te')
    with AnswerWriter(path) as w:
        assert (1, "p") in w and (2, "p") not in w
        w.write({"question_id": 2, "prompt": "p", "text": "b"})
        w.write({"question_id": 2, "prompt": "another question on the same image", "text": "b"})  # MME-style
        with pytest.raises(ValueError, match="question 2 .* is already answered"):
            w.write({"question_id": 2, "prompt": "p", "text": "c"})
    assert answered_ids(path) == {("1", "p"), ("2", "p"), ("2", "another question on the same image")}
    with AnswerWriter(path, resume=False) as w:
        assert not w.done


def test_cli_answers_and_saves_kept_map(tiny_path, tmp_path, capsys):
    from PIL import Image

    from llava.serve.cli import main as cli_main

    out = tmp_path / "kept.png"
    cli_main(["--model-path", tiny_path, "--image-file", str(SAMPLES / "shapes.png"), "--query", "What is it?",
              "--visual-token-num", "58", "--max-new-tokens", "4", "--device", "cpu", "--save-kept-map", str(out)])
    captured = capsys.readouterr()
    assert captured.out.startswith("ASSISTANT:") and "visual tokens seen by the LLM: 58" in captured.err
    import numpy as np

    from llava.kept_map import draw_kept_patches, model_view
    from llava.mm_utils import load_image_processor

    proc = load_image_processor(Path(tiny_path).parent / "clip-vit-tiny-patch14-336")
    plain = np.asarray(draw_kept_patches(model_view(Image.open(SAMPLES / "shapes.png"), proc), None), dtype=float)
    kept = np.asarray(Image.open(out).convert("RGB"), dtype=float)
    assert kept.shape == plain.shape == (672, 672, 3)
    ratio = kept.reshape(24, 28, 24, 28, 3).sum(axis=(1, 3, 4)) / plain.reshape(24, 28, 24, 28, 3).sum(axis=(1, 3, 4))
    assert int((ratio > 0.99).sum()) == 58 and int((ratio < 0.3).sum()) == 576 - 58


def test_kept_map_main_with_eager_tower(tiny_path, tmp_path):
    from PIL import Image

    from llava.kept_map import main as kept_main

    out = tmp_path / "grid.png"
    kept_main(["--model-path", tiny_path, "--image-file", str(SAMPLES / "shapes.png"), "--visual-token-num", "58,29",
               "--pruning-method", "fastervlm,uniform", "--device", "cpu", "--vision-attn", "eager", "--out", str(out)])
    assert Image.open(out).size[0] > 2 * 336  # two columns of panels
