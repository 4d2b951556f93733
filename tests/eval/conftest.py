"""Fixtures for the scorer tests: the published LLaVA-1.5-13B reference files, skipped when absent.

The folder is `$FASTERVLM_REFERENCE` if set, else `<repo>/../shared/reference`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def reference_root() -> Path | None:
    """The reference folder, or None when it is not available."""
    env = os.environ.get("FASTERVLM_REFERENCE")
    cand = Path(env) if env else REPO.parent / "shared" / "reference"
    return cand if (cand / "llava-v1.5-13b").is_dir() else None


@pytest.fixture(scope="session")
def ref13b() -> Path:
    """`<reference>/llava-v1.5-13b`; skips the test when the reference data is absent."""
    root = reference_root()
    if root is None:
        pytest.skip("reference data not found (set FASTERVLM_REFERENCE or place it at <repo>/../shared/reference)")
    return root / "llava-v1.5-13b"
