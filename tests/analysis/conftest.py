"""Fixtures of the analysis tests: a mini instruction jsonl over the bundled sample images (one image missing,
one record without an image), and one run of each analysis on the tiny model, shared by the module."""

from __future__ import annotations

from pathlib import Path

import pytest
from analysis_helpers import run_args, write_mini_jsonl

@pytest.fixture(scope="session")
def mini_data(tmp_path_factory) -> Path:
    return write_mini_jsonl(tmp_path_factory.mktemp("analysis_data") / "mini.jsonl")


@pytest.fixture(scope="session")
def shift_run(tiny_path, mini_data, tmp_path_factory):
    """(stats, output dir) of attn_shift on the mini data; small query chunks to exercise the chunking."""
    from llava.analysis import attn_shift

    out = tmp_path_factory.mktemp("attn_shift")
    stats = attn_shift.main(run_args(tiny_path, mini_data, out, "--query-chunk", "48", "--layers", "0,2,-1"))
    return stats, out


@pytest.fixture(scope="session")
def dispersion_run(tiny_path, mini_data, tmp_path_factory):
    from llava.analysis import attn_dispersion

    out = tmp_path_factory.mktemp("attn_dispersion")
    stats = attn_dispersion.main(run_args(tiny_path, mini_data, out, "--layer", "2"))
    return stats, out
