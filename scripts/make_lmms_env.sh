#!/usr/bin/env bash
# Build a virtual environment where lmms-eval runs our `fastervlm` model on the CPU.
#   bash scripts/make_lmms_env.sh [VENV]        (default .venv-lmms)
#   VENV/bin/python -m pytest tests/integrations/test_lmms_eval.py
# lmms-eval is installed without its dependencies (they pull torchvision, whose registry wheels fail
# next to CPU torch); constraints-lmms.txt lists what its evaluation path needs. On a machine with a
# working torchvision, `pip install -e .[lmms]` installs lmms-eval with all its dependencies instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-lmms}
python -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check install --quiet)
merged=$(mktemp)
trap 'rm -f "$merged"' EXIT
# constraints.txt with the lmms pins added, a package pinned in both taking the lmms pin
python - "$merged" <<'PY'
import re, sys
def name(line):
    return re.split(r"[=<>\s;\[]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
def pins(path):
    return [l.rstrip("\n") for l in open(path) if l.strip() and not l.lstrip().startswith("#")]
lmms = pins("constraints-lmms.txt")
override = {name(l) for l in lmms}
base = [l for l in pins("constraints.txt") if name(l) not in override]
open(sys.argv[1], "w").write("\n".join(base + lmms) + "\n")
PY
"${PIP[@]}" -c "$merged" torch==2.13.0
"${PIP[@]}" -c "$merged" -e ".[test]"
"${PIP[@]}" --no-deps -c "$merged" lmms-eval
"${PIP[@]}" -c "$merged" evaluate sacrebleu loguru tenacity pytz jsonlines pytablewriter filelock
"$VENV/bin/python" - <<'PY'
from importlib.metadata import entry_points
names = [ep.name for ep in entry_points().select(group="lmms_eval.models")]
assert "fastervlm" in names, f"the fastervlm entry point is not installed: {names}"
import lmms_eval.evaluator  # noqa: F401  (the evaluation path imports without torchvision)
print("lmms-eval environment ready: fastervlm is registered")
PY
