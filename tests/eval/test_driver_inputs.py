"""Bad input to the drivers is refused by name, before the model loads, and nothing is written.

Covers: resuming into an answers file written by another run, an answers path that is an input,
question rows that are not objects / lack text / lack their image / are not JSON, empty question
files, and method options of the wrong type.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llava.eval import model_vqa_loader, model_vqa_mmbench, model_vqa_science

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
EXAMPLE = '{"question_id": 1, "image": "a.jpg", "text": "What is shown?"}'


def _flags(tiny_path, questions, answers, *extra) -> list[str]:
    return ["--model-path", tiny_path, "--question-file", str(questions), "--image-folder", str(SAMPLES),
            "--answers-file", str(answers), "--conv-mode", "vicuna_v1", "--temperature", "0",
            "--max_new_tokens", "2", "--device", "cpu", *extra]


def _questions(path: Path, n: int = 2) -> Path:
    path.write_text("".join(json.dumps({"question_id": f"q{i}", "image": "shapes.png", "text": f"Question {i}?"}) + "\n"
                            for i in range(n)))
    return path


def _answers(path: Path, model_id: str = "llava-v1.5-tiny", **meta) -> bytes:
    """An answers file of one record as a K=58 fastervlm fp32 run writes it, plus a killed run's partial line."""
    metadata = {"visual_token_num": 58, "pruning_method": "fastervlm", "pruning_args": {}, "conv_mode": "vicuna_v1",
                "dtype": "float32", "visual_tokens": 58, **meta}
    record = {"question_id": "q0", "prompt": "Question 0?", "text": "a", "answer_id": "x", "model_id": model_id,
              "metadata": metadata}
    path.write_text(json.dumps(record) + "\n" + '{"question_id": "q1", "pro')
    return path.read_bytes()


@pytest.mark.parametrize("record, flags, shown", [
    ({}, ["--visual-token-num", "144"], "visual_token_num=58, this run asks for 144"),
    ({}, ["--visual-token-num", "58", "--pruning-method", "random"], "pruning_method=fastervlm, this run asks for random"),
    ({"pruning_method": "random", "pruning_args": {"seed": 0}},
     ["--visual-token-num", "58", "--pruning-method", "random", "--pruning-args", "seed=1"],
     'pruning_args={"seed": 0}, this run asks for {"seed": 1}'),
    ({}, ["--visual-token-num", "58", "--conv-mode", "llava_v1"], "conv_mode=vicuna_v1, this run asks for llava_v1"),
    ({}, ["--visual-token-num", "58", "--torch-dtype", "fp16"], "dtype=float32, this run asks for float16"),
    ({"anyres_mode": "paper"}, ["--visual-token-num", "58"], "anyres_mode=paper, this run asks for faithful"),
    ({"model_id": "llava-v1.5-7b"}, ["--visual-token-num", "58"], "model_id=llava-v1.5-7b, this run asks for llava-v1.5-tiny"),
    ({}, [], "visual_token_num=58, this run asks for None"),
])
def test_resume_into_another_runs_answers_is_refused(tiny_path, tmp_path, record, flags, shown):
    q = _questions(tmp_path / "q.jsonl")
    a = tmp_path / "a.jsonl"
    model_id = record.pop("model_id", "llava-v1.5-tiny")
    before = _answers(a, model_id, **record)
    with pytest.raises(ValueError) as err:
        model_vqa_loader.main(_flags(tiny_path, q, a, *flags))
    assert str(err.value) == f"answers file {a} was written with {shown}; use a new --answers-file or --no-resume"
    assert a.read_bytes() == before  # not even the partial line was repaired


def test_resolved_dtype_is_checked_after_loading(tiny_path, tmp_path):
    """--torch-dtype auto is only known once the model is loaded (fp32 on CPU); still refused before writing."""
    q = _questions(tmp_path / "q.jsonl")
    a = tmp_path / "a.jsonl"
    before = _answers(a, dtype="float16")
    with pytest.raises(ValueError) as err:
        model_vqa_loader.main(_flags(tiny_path, q, a, "--visual-token-num", "58"))
    assert str(err.value) == (f"answers file {a} was written with dtype=float16, this run asks for float32; "
                              "use a new --answers-file or --no-resume")
    assert a.read_bytes() == before


def test_matching_answers_resume_and_no_resume_starts_afresh(tiny_path, tmp_path):
    q = _questions(tmp_path / "q.jsonl")
    a = tmp_path / "a.jsonl"
    _answers(a)
    model_vqa_loader.main(_flags(tiny_path, q, a, "--visual-token-num", "58"))
    got = [json.loads(line) for line in a.read_text().splitlines()]
    assert [r["question_id"] for r in got] == ["q0", "q1"] and got[0]["answer_id"] == "x"  # kept, q1 added
    assert got[1]["metadata"]["visual_token_num"] == 58 and got[1]["metadata"]["dtype"] == "float32"
    model_vqa_loader.main(_flags(tiny_path, q, a, "--visual-token-num", "29", "--no-resume"))
    assert [json.loads(line)["metadata"]["visual_token_num"] for line in a.read_text().splitlines()] == [29, 29]


def test_answers_path_that_is_the_question_file_is_refused(tiny_path, tmp_path):
    q = _questions(tmp_path / "q.jsonl")
    before = q.read_bytes()
    with pytest.raises(ValueError) as err:
        model_vqa_loader.main(_flags(tiny_path, q, q))
    assert str(err.value) == (f"--answers-file {q} is the same file as --question-file {q}, which it would "
                              "overwrite; choose another --answers-file")
    link = tmp_path / "link.jsonl"
    os.symlink(q, link)
    with pytest.raises(ValueError, match=f"--answers-file {link} is the same file as --question-file {q}, "):
        model_vqa_loader.main(_flags(tiny_path, q, link))
    (tmp_path / "sub").mkdir()
    other_spelling = tmp_path / "sub" / ".." / "q.jsonl"
    with pytest.raises(ValueError, match="is the same file as --question-file"):
        model_vqa_loader.main(_flags(tiny_path, q, other_spelling))
    assert q.read_bytes() == before


@pytest.mark.parametrize("text, message", [
    ("[1, 2]\n", "{q}:1: expected a JSON object like " + EXAMPLE + ", got an array"),
    ('{"question_id": 1, "image": "shapes.png", "text": "ok"}\n"just text"\n',
     "{q}:2: expected a JSON object like " + EXAMPLE + ", got a string"),
    ('{"question_id": 1, "image": "shapes.png", "text": null}\n', "{q}:1: question 1 has 'text' null; expected a string"),
    ('{"question_id": 1, "image": "shapes.png"}\n', "{q}:1: question 1 has no 'text' field"),
    ('\n{"question_id": 1, "image": "shapes.png", "text": "a"\n',
     "{q}:2: not valid JSON (Expecting ',' delimiter at column 54); expected one JSON object per line, like " + EXAMPLE),
    ('{"question_id": 5, "text": "Where is the image?"}\n',
     "{q}:1: question 5 has no 'image'; every question of this benchmark has an image (fix the row, or check that "
     "--question-file is the right file)"),
    ('{"question_id": 5, "image": null, "text": "?"}\n', "{q}:1: question 5 has no 'image'; every question"),
    ('{"question_id": 5, "image": 3, "text": "?"}\n', "{q}:1: question 5 has 'image' a number; expected a file name"),
    ("", "{q}: the question file is empty (no questions); check --question-file"),
    ("\n  \n", "{q}: the question file is empty (no questions); check --question-file"),
])
def test_bad_question_rows_name_file_and_line(tiny_path, tmp_path, text, message):
    q = tmp_path / "q.jsonl"
    q.write_text(text)
    a = tmp_path / "out" / "a.jsonl"
    with pytest.raises(ValueError) as err:
        model_vqa_loader.main(_flags(tiny_path, q, a))
    assert str(err.value).startswith(message.replace("{q}", str(q)))
    assert not a.exists() and not a.parent.exists()


def test_text_only_rows_need_the_flag(tiny_path, tmp_path):
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "text": "Name a colour."}) + "\n")
    a = tmp_path / "a.jsonl"
    model_vqa_loader.main(_flags(tiny_path, q, a, "--allow-text-only"))
    (record,) = [json.loads(line) for line in a.read_text().splitlines()]
    assert record["question_id"] == 1 and record["metadata"]["visual_tokens"] == []


def test_fully_resumed_run_says_nothing_left(tiny_path, tmp_path, capsys):
    q = _questions(tmp_path / "q.jsonl", n=1)
    a = tmp_path / "a.jsonl"
    model_vqa_loader.main(_flags(tiny_path, q, a))
    before = a.read_bytes()
    capsys.readouterr()
    model_vqa_loader.main(_flags(tiny_path, q, a))
    assert capsys.readouterr().err == f"nothing left to answer in {a}\n" and a.read_bytes() == before


def test_missing_files_and_bad_flags_fail_before_loading(tiny_path, tmp_path):
    q = _questions(tmp_path / "q.jsonl")
    a = tmp_path / "a.jsonl"
    cases = [
        (_flags(tiny_path, tmp_path / "none.jsonl", a), FileNotFoundError,
         f"question file {tmp_path / 'none.jsonl'} not found (check --question-file)"),
        (_flags(tiny_path, q, a, "--image-folder", str(tmp_path / "imgs")), FileNotFoundError,
         f"image folder {tmp_path / 'imgs'} not found (check --image-folder)"),
        (_flags(str(tmp_path / "no-model"), q, a), FileNotFoundError, f"--model-path {tmp_path / 'no-model'} not found"),
        (_flags(tiny_path, q, a, "--batch-size", "0"), ValueError, "--batch-size must be >= 1, got 0"),
        (_flags(tiny_path, q, a, "--num-chunks", "2", "--chunk-idx", "2"), ValueError,
         "--chunk-idx 2 must be in [0, --num-chunks 2)"),
        (_flags(tiny_path, q, tmp_path), IsADirectoryError, f"--answers-file {tmp_path} is a folder; give a file path"),
    ]
    for argv, kind, message in cases:
        with pytest.raises(kind) as err:
            model_vqa_loader.main(argv)
        assert str(err.value) == message
    assert not a.exists()


def test_bad_method_argument_names_method_key_value_and_type(tiny_path, tmp_path):
    q = _questions(tmp_path / "q.jsonl")
    a = tmp_path / "a.jsonl"
    with pytest.raises(ValueError) as err:
        model_vqa_loader.main(_flags(tiny_path, q, a, "--visual-token-num", "58", "--pruning-method", "vispruner",
                                     "--pruning-args", "important_ratio=abc"))
    assert str(err.value) == ("pruning method 'vispruner': argument important_ratio='abc' must be a float "
                              "(default 0.5); fix --pruning-args")
    with pytest.raises(ValueError) as err:
        model_vqa_loader.main(_flags(tiny_path, q, a, "--pruning-method", "fastv", "--pruning-args", "layer=two"))
    assert str(err.value) == "pruning method 'fastv': argument layer='two' must be an int (default 2); fix --pruning-args"
    assert not a.exists()


def test_unknown_method_is_an_argparse_error(tiny_path, tmp_path, capsys):
    q = _questions(tmp_path / "q.jsonl")
    with pytest.raises(SystemExit) as exit_:
        model_vqa_loader.main(_flags(tiny_path, q, tmp_path / "a.jsonl", "--pruning-method", "nope"))
    assert exit_.value.code == 2
    from llava.cli_help import METHOD_NAMES

    choices = ", ".join(repr(name) for name in METHOD_NAMES)
    assert f"argument --pruning-method: invalid choice: 'nope' (choose from {choices})" in capsys.readouterr().err


def test_science_keeps_text_only_problems_and_refuses_bad_files(tiny_path, tmp_path):
    q = tmp_path / "sqa.json"
    a = tmp_path / "a.jsonl"
    flags = _flags(tiny_path, q, a)
    for text, message in [
        ("", f"{q}: the question file is empty (no questions); check --question-file"),
        ("[]", f"{q}: the question file is empty (no problems); check --question-file"),
        ('{"id": 1}', f"{q}: expected a JSON list of problems (LLaVA's llava_test_CQM-A.json), got a dict"),
        ('[{"id": "1", "conversations": [{"from": "human", "value": null}]}]',
         f"{q}: record 0 has no id or no human turn text (expected {{id, conversations: [{{from, value}}, ...]}}; "
         "AttributeError: 'NoneType' object has no attribute 'replace')"),
        ('[{"id": "1", "conversations": [{"from": "human", "value": "Q"}]},\n', f"{q}:2:1: not valid JSON"),
    ]:
        q.write_text(text)
        with pytest.raises(ValueError) as err:
            model_vqa_science.main(flags)
        assert str(err.value).startswith(message)
    assert not a.exists()


def test_mmbench_empty_tsv(tiny_path, tmp_path):
    tsv = tmp_path / "mmb.tsv"
    a = tmp_path / "a.jsonl"
    tsv.write_text("")
    with pytest.raises(ValueError) as err:
        model_vqa_mmbench.main(_flags(tiny_path, tsv, a))
    assert str(err.value) == f"{tsv}: the question file is empty (no questions); check --question-file"
    tsv.write_text("index\tquestion\timage\tA\tB\n")
    with pytest.raises(ValueError) as err:
        model_vqa_mmbench.main(_flags(tiny_path, tsv, a))
    assert str(err.value) == f"{tsv}: the question file is empty (a header but no rows); check --question-file"
    assert not a.exists()


def test_sweep_refuses_a_k_file_of_another_k_before_writing_any(tiny_path, tmp_path):
    q = _questions(tmp_path / "q.jsonl")
    before = _answers(tmp_path / "a_29.jsonl")  # written by a K=58 run
    with pytest.raises(ValueError) as err:
        model_vqa_loader.main(_flags(tiny_path, q, tmp_path / "a_{k}.jsonl", "--visual-token-num", "58,29"))
    assert str(err.value) == (f"answers file {tmp_path / 'a_29.jsonl'} was written with visual_token_num=58, this run "
                              "asks for 29; use a new --answers-file or --no-resume")
    assert (tmp_path / "a_29.jsonl").read_bytes() == before and not (tmp_path / "a_58.jsonl").exists()


def test_merge_refuses_to_overwrite_one_of_its_inputs(tmp_path, capsys):
    from llava.eval.merge import main as merge_main

    shard = tmp_path / "a.rank0-of-1.jsonl"
    shard.write_text(json.dumps({"question_id": 1, "prompt": "p", "text": "t", "metadata": {}}) + "\n")
    before = shard.read_bytes()
    assert merge_main(["--answers-file", str(shard), str(shard)]) == 2
    assert capsys.readouterr().err == (f"error: --answers-file {shard} is the same file as shard 0 {shard}, which it "
                                       "would overwrite; choose another --answers-file\n")
    assert shard.read_bytes() == before
