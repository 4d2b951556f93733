#!/usr/bin/env bash
# One-command setup and main job, offline, on the embedded tiny model and the bundled samples:
#   1. installs torch (CPU 2.13.0 unless a torch is already there), the package and the test reference;
#   2. writes the tiny random-weight LLaVA-1.5 checkpoint to playground/tiny/;
#   3. answers the sample questions at K=576 (no pruning) and K=58 (90% pruned) with model_vqa_loader;
#   4. prints the answers and draws the kept patches for several K into outputs/quickstart/.
# Random weights give meaningless text; the same commands with a real checkpoint do the real job.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch" 2>/dev/null || python -m pip install --quiet -c constraints.txt torch==2.13.0
# the tested versions (constraints.txt), less its torch pin so that a torch already there stays
python -m pip install --quiet -c <(grep -v '^torch==' constraints.txt) -e ".[test]"
bash scripts/install_oracle.sh .oracle >/dev/null || echo "(oracle not installed: its tests will skip)"

python -m llava.model.tiny --out playground/tiny
out=outputs/quickstart
mkdir -p "$out"
for k in 576 58; do
  python -m llava.eval.model_vqa_loader \
      --model-path playground/tiny/llava-v1.5-tiny \
      --question-file playground/data/sample/questions.jsonl \
      --image-folder assets/samples \
      --answers-file "$out/answers_k$k.jsonl" --no-resume \
      --conv-mode vicuna_v1 --temperature 0 --max_new_tokens 16 \
      --visual-token-num "$k" --batch-size 3
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("answers_k*.jsonl")):
    for line in path.read_text().splitlines():
        a = json.loads(line)
        print(f"[{path.stem}] q{a['question_id']} ({a['metadata']['visual_tokens']} visual tokens) "
              f"{a['prompt'][:40]!r} -> {a['text']!r}")
PY
python -m llava.kept_map --model-path playground/tiny/llava-v1.5-tiny --image-file assets/samples/shapes.png \
    --visual-token-num 576,144,58,29 --pruning-method fastervlm,uniform --out "$out/kept_patches.png"
echo "done: answers and kept_patches.png in $out (random weights: the text is meaningless by design)"
