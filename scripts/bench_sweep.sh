#!/bin/bash
# Time a 5-budget K sweep (one run, model loaded once, each image encoded once) against 5 separate runs.
#   bash scripts/bench_sweep.sh                      # the embedded tiny model, bundled sample questions, CPU
#   bash scripts/bench_sweep.sh --model-path DIR --question-file Q.jsonl --image-folder IMG --device cuda
# Extra flags go to `python -m llava.eval.bench_sweep` (see its --help); results: docs/PERFORMANCE_SWEEP.md.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python}" -m llava.eval.bench_sweep --budgets 576,288,144,58,29 --repeats 5 "$@"
