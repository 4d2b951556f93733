"""Contract tests generated from the benchmark catalogue: every record is wired to real code and docs."""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llava.eval import catalogue, summarize
from llava.eval.catalogue.files import Context

REPO = Path(__file__).resolve().parents[2]
RECORDS = {r.name: r for r in catalogue.RECORDS}
MODELS = ("LLaVA-1.5-7B", "LLaVA-1.5-13B")


def test_catalogue_is_complete_and_unique():
    assert catalogue.names() == ["gqa", "llavabench", "mmbench", "mmbench_cn", "mme", "mmvet", "pope", "scienceqa",
                                 "seed", "textvqa", "vizwiz", "vqav2"]
    spellings = [s.lower() for r in catalogue.RECORDS for s in {r.name, *r.aliases}]
    assert len(spellings) == len(set(spellings)), "a name or alias is used by two records"
    columns = catalogue.paper_columns()
    assert len(columns) == len(set(columns)) == 12
    assert summarize.PAPER_ORDER == columns == ("VQAv2", "GQA", "VizWiz", "SQA-IMG", "TextVQA", "POPE", "MME", "MMB",
                                                "MMB-CN", "SEED", "MM-Vet", "LLaVA-Bench")


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_record_is_wired(name):
    record = RECORDS[name]
    driver = importlib.import_module(record.driver)
    assert callable(getattr(driver, "main", None)), f"{record.driver} has no main"
    scorer = importlib.import_module(record.scorer)
    assert callable(getattr(scorer, "main", None)), f"{record.scorer} has no main"
    assert "add_save_args" in inspect.getsource(scorer), f"{record.scorer} cannot write a score record"
    params = list(inspect.signature(record.converter).parameters.values())
    assert len(params) == 1 and params[0].annotation in (Context, "Context")
    assert inspect.getmodule(record.converter).__name__ == f"llava.eval.catalogue.{name.split('_')[0]}"
    assert record.hub_id.startswith("lmms-lab/") and record.split and record.folder
    for spelling in {record.name, *record.aliases, *record.columns}:
        assert catalogue.get(spelling) is record and catalogue.get(spelling.upper()) is record
        assert summarize.canonical_name(spelling) == (spelling if spelling in record.columns else record.columns[0])
    for column in record.columns:
        assert column in summarize.PAPER_ORDER
        assert all(record.baseline(model, column) is not None for model in MODELS), column
    with pytest.raises(TypeError):
        record.baselines["x"] = 1.0  # frozen, like the record


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_scorer_default_column_is_the_records(name):
    """A literal default `add_save_args(parser, "X")` in the scorer names a column summarize knows."""
    record = RECORDS[name]
    tree = ast.parse(inspect.getsource(importlib.import_module(record.scorer)))
    defaults = [node.args[1].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "add_save_args" and len(node.args) == 2
                and isinstance(node.args[1], ast.Constant) and node.args[1].value]
    for default in defaults:
        assert summarize.canonical_name(default) in summarize.PAPER_ORDER


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_a_script_runs_each_benchmark(name):
    record = RECORDS[name]
    scripts = [s for s in {record.name, *record.aliases} if (REPO / "scripts" / "v1_5" / "eval" / f"{s}.sh").is_file()]
    assert len(scripts) == 1, f"{name}: scripts {scripts}"
    text = (REPO / "scripts" / "v1_5" / "eval" / f"{scripts[0]}.sh").read_text()
    assert f"BENCH={scripts[0]}\n" in text and record.driver in text and record.scorer in text
    assert (REPO / "scripts" / "v1_6" / "eval" / f"{scripts[0]}.sh").is_file()


def test_published_baselines_match_eval_md():
    """EVAL.md's "Published numbers" table and the records' baselines are the same 24 numbers."""
    lines = (REPO / "EVAL.md").read_text(encoding="utf-8").splitlines()
    header = next(line for line in lines if line.startswith("| model | VQAv2"))
    columns = [c.strip() for c in header.strip("|").split("|")][1:]
    for model in MODELS:
        row = next(line for line in lines if line.startswith(f"| {model} |"))
        values = [float(v) for v in row.strip("|").split("|")[1:]]
        assert {c: catalogue.get(c).baseline(model, c) for c in columns} == dict(zip(columns, values))


def test_query_cli_for_the_scripts():
    def query(*args):
        return subprocess.run([sys.executable, "-m", "llava.eval.catalogue", *args], capture_output=True, text=True,
                              cwd=REPO)

    assert query("fields", "sqa").stdout == "scienceqa\tscienceqa\tSQA-IMG\n"
    assert query("folder", "SEED").stdout == "seed_bench\n"
    bad = query("folder", "nope")
    assert bad.returncode == 2 and "unknown benchmark 'nope'; choose from gqa" in bad.stderr
    assert re.fullmatch(r"(\S+\t\S+\t\S+\n){16}", query("list").stdout)  # 12 image + 4 video-QA benchmarks
    assert query("video-fields", "anet").stdout == \
        "activitynet\tGPT_Zero_Shot_QA/Activitynet_Zero_Shot_QA\tActivityNet-QA\tall_test\n"
    assert query("video-fields", "pope").returncode == 2
