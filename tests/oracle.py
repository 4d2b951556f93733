"""Run code under the original LLaVA implementation (transformers 4.37) in a separate process.

The oracle lives in a side folder (`scripts/install_oracle.sh`): `$FASTERVLM_ORACLE`, or
`<repo>/.oracle`. Tests that need it call `require_oracle()`, which skips cleanly when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def oracle_dir() -> Path | None:
    """The oracle folder, or None when it is not installed."""
    cand = Path(os.environ.get("FASTERVLM_ORACLE", REPO / ".oracle"))
    if (cand / "transformers").is_dir() and (cand / "llava").is_dir():
        return cand
    return None


def require_oracle() -> Path:
    path = oracle_dir()
    if path is None:
        pytest.skip("original LLaVA oracle not installed (bash scripts/install_oracle.sh)")
    return path


def run_oracle(code: str, payload: dict, timeout: int = 900) -> dict:
    """Run `code` under the oracle; it reads `PAYLOAD` (a dict) and must set `RESULT` (JSON-able).

    The process starts in a temp dir so that this repository's `llava` package cannot shadow the
    oracle's, and the oracle's folder comes first on PYTHONPATH.
    """
    path = require_oracle()
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "oracle_job.py"
        io = Path(tmp) / "io.json"
        io.write_text(json.dumps(payload))
        script.write_text(
            "import json, sys\n"
            f"PAYLOAD = json.load(open({str(io)!r}))\n"
            + textwrap.dedent(code)
            + f"\njson.dump(RESULT, open({str(io)!r}, 'w'))\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PYTHONPATH=str(path), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=tmp, env=env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"oracle job failed:\n{proc.stderr[-4000:]}")
        return json.loads(io.read_text())
