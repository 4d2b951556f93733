"""Commands: one-line errors (traceback only with --debug / FASTERVLM_DEBUG), and a fast, complete --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava.cli_errors import UserError, run_main
from llava.cli_help import METHOD_NAMES

REPO = Path(__file__).resolve().parents[1]
DRIVERS = ["llava.eval.model_vqa_loader", "llava.eval.model_vqa", "llava.eval.model_vqa_science",
           "llava.eval.model_vqa_mmbench", "llava.eval.model_video_qa"]
SCORERS = ["llava.eval.eval_gqa", "llava.eval.eval_mmbench", "llava.eval.eval_mme", "llava.eval.eval_mmvet_summary",
           "llava.eval.eval_pope", "llava.eval.eval_science_qa", "llava.eval.eval_seed", "llava.eval.eval_textvqa",
           "llava.eval.eval_vqa", "llava.eval.merge", "llava.eval.summarize", "llava.eval.eval_video_qa"]
HELP_PROBE = """
import json, runpy, sys
for module in sys.argv[1:]:
    sys.argv = [module, "--help"]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = None
    except SystemExit as exit_:
        code = exit_.code
    print(json.dumps({"module": module, "code": code, "torch": "torch" in sys.modules}))
"""


def _python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "FASTERVLM_DEBUG": "", **(env or {})})


def _probe(*modules: str) -> tuple[list[dict], str, float]:
    start = time.perf_counter()
    proc = _python("-c", HELP_PROBE, *modules)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"module"')], proc.stdout, elapsed


@pytest.mark.parametrize("module", [*DRIVERS, "llava.serve.cli", "llava.kept_map"])
def test_help_is_fast_and_imports_no_torch(module):
    (result,), out, elapsed = _probe(module)
    assert result == {"module": module, "code": 0, "torch": False}
    assert elapsed < 3.0, f"{module} --help took {elapsed:.1f} s"
    assert "--debug" in out


def test_scorer_help_imports_no_torch():
    results, out, _ = _probe(*SCORERS)
    assert results == [{"module": m, "code": 0, "torch": False} for m in SCORERS]
    assert out.count("--debug ") >= len(SCORERS)  # each usage line offers it


def test_driver_help_lists_methods_keeps_examples_and_shows_defaults():
    from llava.eval.model_vqa_loader import EPILOG, build_parser

    parser = build_parser()
    undocumented = [a.option_strings for a in parser._actions if not a.help]
    assert undocumented == []
    text = parser.format_help()
    assert f"how the K tokens are chosen: {', '.join(METHOD_NAMES)}" in " ".join(text.split())
    assert EPILOG.strip() in text  # verbatim, line breaks and continuation backslashes intact
    assert "      --question-file playground/data/eval/pope/llava_pope_test.jsonl \\\n" in text
    flat = " ".join(text.split())  # argparse wraps lines at the terminal width
    assert "(default: fastervlm)" in flat and "(default: 128)" in flat


def test_serve_cli_flags_all_have_help():
    from llava.serve.cli import build_parser

    assert [a.option_strings for a in build_parser()._actions if not a.help] == []


def test_user_error_is_one_line_and_exit_2(tmp_path):
    missing = tmp_path / "none.jsonl"
    proc = _python("-m", "llava.eval.model_vqa_loader", "--question-file", str(missing))
    assert proc.returncode == 2
    assert proc.stderr == f"error: question file {missing} not found (check --question-file)\n"
    debug = _python("-m", "llava.eval.model_vqa_loader", "--question-file", str(missing), "--debug")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().endswith(f"FileNotFoundError: question file {missing} not found (check --question-file)")
    env = _python("-m", "llava.eval.eval_gqa", "--result-file", str(missing), env={"FASTERVLM_DEBUG": "1"})
    assert env.returncode == 1 and "Traceback (most recent call last)" in env.stderr


def test_scorer_refusal_is_one_line(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"question_id": "1", "text": "yes"}) + "\n")
    (tmp_path / "q.json").write_text(json.dumps({"1": {"answer": "yes"}, "2": {"answer": "no"}}))
    proc = _python("-m", "llava.eval.eval_gqa", "--result-file", str(tmp_path / "a.jsonl"),
                   "--questions", str(tmp_path / "q.json"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (f"error: {tmp_path / 'a.jsonl'}: 1 of 2 questions in {tmp_path / 'q.json'} have no prediction "
                           "(first: '2'); no score over an incomplete set: answer every question, or pass "
                           "--allow-incomplete to score what is there\n")


def _raiser(err: BaseException):
    def main(argv):
        main.argv = argv
        raise err

    return main


@pytest.mark.parametrize("err", [UserError("bad flag"), ValueError("bad value"), FileNotFoundError("no file x")])
def test_run_main_user_errors(err, capsys, monkeypatch):
    monkeypatch.delenv("FASTERVLM_DEBUG", raising=False)
    main = _raiser(err)
    with pytest.raises(SystemExit) as exit_:
        run_main(main, ["--a", "--debug-not", "x"])
    assert exit_.value.code == 2 and main.argv == ["--a", "--debug-not", "x"]
    assert capsys.readouterr().err == f"error: {err}\n"
    with pytest.raises(type(err)):  # --debug: the exception itself, with its traceback
        run_main(main, ["--debug", "x"])
    assert main.argv == ["x"]
    monkeypatch.setenv("FASTERVLM_DEBUG", "1")
    with pytest.raises(type(err)):
        run_main(main, ["x"])


def test_run_main_multiline_message_and_status(capsys, monkeypatch):
    monkeypatch.delenv("FASTERVLM_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_:
        run_main(_raiser(ValueError("first\n  second\n")), [])
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: first; second\n"
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda argv: 3, [])
    assert exit_.value.code == 3
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda argv: {"score": 1.0}, [])
    assert exit_.value.code == 0
    with pytest.raises(KeyError):  # a bug keeps its traceback
        run_main(_raiser(KeyError("k")), [])


class _Parsed(Exception):
    """Raised instead of parsing, carrying the parser a command built."""


@pytest.mark.parametrize("module", [*DRIVERS, *SCORERS, "llava.serve.cli", "llava.kept_map"])
def test_every_flag_has_help(module, monkeypatch):
    import argparse
    import importlib

    def grab(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(_Parsed) as parsed:
        importlib.import_module(module).main([])

    def undocumented(parser, name):
        out = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    out += undocumented(subparser, f"{name} {sub}")
            elif not action.help:
                out.append((name, action.option_strings or action.dest))
        return out

    parser = parsed.value.args[0]
    assert undocumented(parser, module) == []
    assert parser.formatter_class.__name__ == "HelpFormatter"


def test_serve_cli_and_kept_map_check_inputs_before_loading(tmp_path):
    from llava import kept_map
    from llava.serve import cli

    image = REPO / "assets" / "samples" / "shapes.png"
    cases = [
        (cli.main, ["--model-path", str(tmp_path), "--image-file", str(tmp_path / "no.png")], FileNotFoundError,
         f"image file {tmp_path / 'no.png'} not found (check --image-file)"),
        (cli.main, ["--model-path", str(tmp_path / "none"), "--image-file", str(image)], FileNotFoundError,
         f"--model-path {tmp_path / 'none'} not found"),
        (cli.main, ["--model-path", str(tmp_path), "--image-file", str(image), "--visual-token-num", "0"], ValueError,
         "--visual-token-num must be >= 1, got 0"),
        (kept_map.main, ["--model-path", str(tmp_path), "--image-file", str(image), "--pruning-method", "fastervlm,nope"],
         ValueError, "--pruning-method 'fastervlm,nope': unknown pruning method 'nope'; available: "
         + ", ".join(METHOD_NAMES)),
        (kept_map.main, ["--model-path", str(tmp_path), "--image-file", str(image), "--visual-token-num", "58,x"],
         ValueError, "--visual-token-num '58,x': expected comma-separated positive integers"),
        (kept_map.main, ["--model-path", str(tmp_path), "--image-file", str(image), "--out", str(tmp_path / "d" / "k.png")],
         FileNotFoundError, f"--out {tmp_path / 'd' / 'k.png'}: its folder does not exist"),
    ]
    for main, argv, kind, message in cases:
        with pytest.raises(kind) as err:
            main(argv)
        assert str(err.value) == message
