"""`scripts/video/eval/<bench>.sh K` with a bad K stops at once, exit 2, one error line, nothing run.
Before: K above 256 (a frame's patch count) ran as a "k300" row that is the k256 run under another
name, and an empty K (an unset variable passed as "$K") silently ran the unpruned evaluation."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "video" / "eval"


@pytest.mark.parametrize("k", ["300", "257", "", "0", "-3", "1x", "1e3"])
def test_a_bad_k_is_refused_before_anything_runs(tmp_path, k):
    out = subprocess.run(["bash", str(SCRIPTS / "msvd.sh"), k], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "PYTHON": "false"})
    assert out.returncode == 2
    assert out.stderr == (f"error: K (the first argument) must be a positive integer (tokens per frame) up to 256 "
                          f"(a frame's patches) or 'full', got '{k}'\n")
    assert list(tmp_path.iterdir()) == []
