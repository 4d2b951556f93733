"""llava.torchvision_compat: torchvision importable where its compiled ops can't load, untouched otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(code: str, path: Path | None = None) -> subprocess.CompletedProcess:
    env_path = [str(path)] if path else []
    code = f"import sys; sys.path[:0] = {env_path!r} + [{str(REPO)!r}]\n" + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_absent_torchvision_is_left_absent():
    result = _run("""
        from llava.torchvision_compat import prepare_torchvision
        import importlib.util
        assert importlib.util.find_spec("torchvision") is None, "the core install keeps torchvision out"
        assert prepare_torchvision() == "absent"
        import torch
        assert not hasattr(torch.ops.torchvision, "nms")
    """)
    assert result.returncode == 0, result.stderr


def test_unloadable_ops_get_their_schemas_declared(tmp_path):
    """A torchvision whose `_C` can't load (as the CUDA wheel beside CPU torch): the import succeeds after prepare."""
    pkg = tmp_path / "torchvision"
    pkg.mkdir()
    (pkg / "_C.so").write_bytes(b"not a shared object")
    # what torchvision's __init__ does first: a meta kernel for an op its extension should have defined
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import torch
        @torch.library.register_fake("torchvision::nms")
        def _nms(dets, scores, iou_threshold):
            return dets.new_empty(0, dtype=torch.long)
        from .transforms import resize
    """))
    (pkg / "transforms.py").write_text("def resize(x, size):\n    return x[..., :size[0], :size[1]]\n")
    before = _run("import torchvision", tmp_path)
    assert before.returncode != 0 and "torchvision::nms" in before.stderr  # the failure being fixed
    result = _run("""
        from llava.torchvision_compat import OP_SCHEMAS, prepare_torchvision, torchvision_state
        assert prepare_torchvision() == "no-ops"
        import torch, torchvision
        assert torchvision_state() == "imported"
        assert torchvision.resize(torch.ones(3, 8, 8), [4, 4]).shape == (3, 4, 4)
        for schema in OP_SCHEMAS:
            assert hasattr(torch.ops.torchvision, schema.split("(")[0]), schema
        try:
            torch.ops.torchvision.roi_align(torch.ones(1, 1, 4, 4), torch.zeros(1, 5), 1.0, 2, 2, 1, False)
        except (RuntimeError, NotImplementedError) as err:
            assert "roi_align" in str(err)
        else:
            raise AssertionError("a declared op must have no kernel")
        print("ok")
    """, tmp_path)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr
