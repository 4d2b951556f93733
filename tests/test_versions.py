"""The versions pinned in constraints.txt are the versions pyproject.toml allows, and vice versa.

pyproject.toml caps every dependency at the newest release the suite has passed on; constraints.txt
pins that tested set exactly. These tests keep the two in step, so a pin bumped outside its range
(or a range widened without a tested pin) fails here rather than on a user's fresh install.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11+")

REPO = Path(__file__).resolve().parents[1]
TESTED_EXTRAS = ("test", "eval", "analysis")  # "flash" is a GPU-only extra, never installed by CI
FORBIDDEN = {"torchvision", "torchaudio", "torchcodec"}
UPPER_OPS = {"<", "<=", "==", "===", "~="}


def read_pins(text: str) -> dict[str, Version]:
    """`name==version` lines of a constraints file -> {canonical name: version}; comments dropped."""
    pins: dict[str, Version] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", line)
        if m is None:
            raise ValueError(f"constraints.txt line {lineno}: {raw!r} is not name==version")
        name = canonicalize_name(m.group(1))
        if name in pins:
            raise ValueError(f"constraints.txt line {lineno}: {name} is pinned twice")
        pins[name] = Version(m.group(2))
    return pins


def declared(project: dict, extras: tuple[str, ...] = TESTED_EXTRAS) -> list[Requirement]:
    """Core dependencies plus the given extras, as parsed requirements."""
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def out_of_range(reqs: list[Requirement], pins: dict[str, Version]) -> list[str]:
    """Every pin that a declared requirement of the same name does not admit."""
    bad = []
    for req in reqs:
        pin = pins.get(canonicalize_name(req.name))
        if pin is not None and not req.specifier.contains(pin, prereleases=True):
            bad.append(f"{req.name}=={pin} is outside {req.name}{req.specifier}")
    return bad


def has_upper_bound(req: Requirement) -> bool:
    return any(spec.operator in UPPER_OPS for spec in req.specifier)


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


@pytest.fixture(scope="module")
def pins() -> dict[str, Version]:
    return read_pins((REPO / "constraints.txt").read_text(encoding="utf-8"))


def test_constraints_pin_the_tested_stack(pins):
    for name in ["torch", "transformers", "tokenizers", "accelerate", "datasets", "huggingface-hub",
                 "safetensors", "sentencepiece", "protobuf", "numpy", "pillow", "tqdm", "shortuuid",
                 "matplotlib", "pandas", "openpyxl", "pytest", "pyarrow", "fsspec", "filelock",
                 "regex", "pyyaml", "packaging"]:
        assert name in pins, f"{name} is not pinned in constraints.txt"
    assert pins["torch"] == Version("2.13.0")
    assert "fastervlm" not in pins


def test_every_pin_is_inside_its_declared_range(project, pins):
    assert out_of_range(declared(project), pins) == []


def test_out_of_range_catches_a_pin_past_its_cap_or_below_its_floor():
    reqs = [Requirement("transformers>=5.20,<=5.24.0"), Requirement("numpy>=1.26,<=2.4.6"),
            Requirement("tqdm>=4.64,<=4.70.1")]
    pins = {"transformers": Version("5.25.0"), "numpy": Version("1.20"), "tqdm": Version("4.70.1")}
    assert sorted(out_of_range(reqs, pins)) == [
        "numpy==1.20 is outside numpy<=2.4.6,>=1.26",
        "transformers==5.25.0 is outside transformers<=5.24.0,>=5.20",
    ]


def test_every_capped_dependency_is_pinned_and_every_tested_one_is_capped(project, pins):
    for req in declared(project):
        assert has_upper_bound(req), f"{req} has no upper bound (cap it at the newest tested release)"
        assert canonicalize_name(req.name) in pins, f"{req.name} is capped but not pinned in constraints.txt"
        # the cap is the tested pin itself, not some looser bound above it
        pin = pins[canonicalize_name(req.name)]
        caps = [Version(spec.version) for spec in req.specifier if spec.operator in {"<=", "=="}]
        assert caps == [pin], f"{req}: its cap should be the tested pin, <={pin} (constraints.txt)"


def test_no_torch_media_packages(project, pins):
    every_extra = tuple(project["optional-dependencies"])
    names = {canonicalize_name(r.name) for r in declared(project, every_extra)}
    assert names & FORBIDDEN == set(), "pyproject.toml must not depend on torchvision/torchaudio/torchcodec"
    assert set(pins) & FORBIDDEN == set(), "constraints.txt must not pin torchvision/torchaudio/torchcodec"


@pytest.mark.parametrize("script", [".ci/run", "scripts/quickstart.sh"])
def test_installers_use_the_constraints(script, pins):
    text = (REPO / script).read_text(encoding="utf-8")
    installs = [line for line in text.splitlines() if "pip install" in line and "-e " in line]
    assert installs and all("-c " in line and "constraints.txt" in line for line in installs), installs
    assert re.findall(r"torch==([0-9.]+)", text) and all(
        Version(v) == pins["torch"] for v in re.findall(r"torch==([0-9.]+)", text))


def test_read_pins_rejects_a_loose_line():
    assert read_pins("a==1.0  # note\n\n# only a comment\nB_c==2.0.post1\n") == {
        "a": Version("1.0"), "b-c": Version("2.0.post1")}
    with pytest.raises(ValueError, match="line 2: 'torch>=2' is not name==version"):
        read_pins("a==1\ntorch>=2\n")
    with pytest.raises(ValueError, match="line 2: a is pinned twice"):
        read_pins("a==1\nA==2\n")


def test_lmms_extra_is_capped_at_the_pin_its_environment_tested(project):
    """`pip install -e .[lmms]` allows the lmms-eval release that scripts/make_lmms_env.sh pins and tests."""
    lmms_pins = read_pins((REPO / "constraints-lmms.txt").read_text(encoding="utf-8"))
    for req in (Requirement(line) for line in project["optional-dependencies"]["lmms"]):
        pin = lmms_pins[canonicalize_name(req.name)]
        assert req.specifier.contains(pin), f"{req.name}=={pin} is outside {req}"
        caps = [Version(s.version) for s in req.specifier if s.operator == "<="]
        assert caps == [pin], f"{req.name}: the cap {caps} is not the tested pin {pin}"
    assert not FORBIDDEN & set(lmms_pins), "the lmms environment must not pin torchvision and friends"
