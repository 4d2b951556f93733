#!/bin/bash
# POPE (COCO val2014; adversarial / popular / random): F1 per category, headline = their mean (x100).
#   bash scripts/v1_5/eval/pope.sh [K]      (environment overrides: see common.sh / EVAL.md)
set -euo pipefail
BENCH=pope
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
QUESTIONS="$BENCH_DIR/llava_pope_test.jsonl"
LABELS="${POPE_LABELS:-$(first_existing "$BENCH_DIR/labels" "$BENCH_DIR/coco")}"   # LLaVA's eval.zip used pope/coco
need "$QUESTIONS" "POPE question file"
need "$BENCH_DIR/val2014" "COCO val2014 image folder"
need "$LABELS" "POPE label folder (coco_pope_<category>.json)"

run_driver llava.eval.model_vqa_loader "$BENCH_DIR/answers/$RUN_NAME/k$K" \
    --question-file "$QUESTIONS" --image-folder "$BENCH_DIR/val2014"

"$PYTHON" -m llava.eval.eval_pope --annotation-dir "$LABELS" --question-file "$QUESTIONS" \
    --result-file "$ANSWERS" --save-json "$(score_json "$BENCH")" --k "$K"
