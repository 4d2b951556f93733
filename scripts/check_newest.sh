#!/usr/bin/env bash
# Does the suite pass on the newest releases that pyproject.toml's ranges allow? constraints.txt pins
# what was tested; this script ignores it on purpose, to see what a fresh unpinned install gets:
#   1. a fresh venv (VENV_DIR, default a new temp dir) with torch==2.13.0 first, then
#      `pip install --upgrade --upgrade-strategy eager -e ".[test]"` without the constraints;
#   2. prints the resolved versions of the key packages and every difference from constraints.txt;
#   3. installs the oracle into VENV_DIR/oracle and runs `python -m pytest -q` there, exiting with
#      its status (pass pytest arguments after `--`; --no-tests stops before pytest).
# Usage: scripts/check_newest.sh [VENV_DIR] [--no-tests] [-- PYTEST_ARGS...]
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

usage() { sed -n 's/^# Usage: //p' "$0"; }
venv="" run_tests=1 pytest_args=()
while (($#)); do
  case "$1" in
    --no-tests) run_tests=0 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; pytest_args=("$@"); break ;;
    -*) echo "check_newest: unknown option $1 ($(usage))" >&2; exit 2 ;;
    *) if [[ -n "$venv" ]]; then echo "check_newest: one VENV_DIR only, got $venv and $1" >&2; exit 2; fi
       venv="$1" ;;
  esac
  shift
done
venv="${venv:-$(mktemp -d)/venv}"
if [[ -e "$venv" && ! -x "$venv/bin/python" ]]; then
  echo "check_newest: $venv exists and is not a venv (give a new or an existing venv path)" >&2; exit 2
fi

python3 -m venv "$venv"
export PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv"
unset PIP_CONSTRAINT  # no pins from the environment either: the point is the unpinned resolution
pip() { python -m pip --disable-pip-version-check "$@"; }
cd "$repo"
echo "check_newest: venv $venv"
pip install --quiet torch==2.13.0
pip install --quiet --upgrade --upgrade-strategy eager -e ".[test]"

python - constraints.txt <<'PY'
"""Print the resolved versions of the key packages and how the venv differs from constraints.txt."""
import sys
from importlib.metadata import distributions
from packaging.utils import canonicalize_name

KEY = ["torch", "transformers", "tokenizers", "accelerate", "datasets", "huggingface-hub",
       "safetensors", "sentencepiece", "protobuf", "numpy", "pillow", "pyarrow", "fsspec", "pytest"]
pins = {}
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if line:
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version.strip()
have = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
have = {n: v for n, v in have.items() if n not in {"pip", "setuptools", "wheel", "fastervlm"}}

print("resolved (newest the ranges allow):")
for name in KEY:
    print(f"  {name:20s} {have.get(name, 'not installed')}")
diffs = [f"  {n:20s} {pins[n]} -> {have[n]}" for n in sorted(pins.keys() & have.keys())
         if have[n].split("+")[0] != pins[n]]
diffs += [f"  {n:20s} {pins[n]} -> not installed" for n in sorted(pins.keys() - have.keys())]
diffs += [f"  {n:20s} not pinned -> {have[n]}" for n in sorted(have.keys() - pins.keys())]
print(f"differences from constraints.txt ({len(diffs)}):" if diffs else "same versions as constraints.txt")
print("\n".join(diffs))
PY

oracle="$venv/oracle"
bash scripts/install_oracle.sh "$oracle" || echo "check_newest: oracle install failed: oracle tests will skip"
if ((run_tests == 0)); then
  echo "check_newest: --no-tests, stopping before pytest (run: FASTERVLM_ORACLE=$oracle $venv/bin/python -m pytest -q)"
  exit 0
fi
status=0
FASTERVLM_ORACLE="$oracle" python -m pytest -q "${pytest_args[@]}" || status=$?
echo "check_newest: pytest exited $status on the newest releases (venv $venv)"
exit "$status"
