#!/bin/bash
# SEED-Bench (v1; video questions use one middle frame): accuracy per question type, image / video /
# all; headline = image accuracy. Also writes the leaderboard upload file.
#   bash scripts/v1_5/eval/seed.sh [K]
set -euo pipefail
BENCH=seed
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
QUESTIONS="$BENCH_DIR/llava-seed-bench.jsonl"
ANNOTATION="$BENCH_DIR/SEED-Bench.json"
need "$QUESTIONS" "SEED-Bench question file"
need "$ANNOTATION" "SEED-Bench.json"

run_driver llava.eval.model_vqa_loader "$BENCH_DIR/answers/$RUN_NAME/k$K" \
    --question-file "$QUESTIONS" --image-folder "$BENCH_DIR"

UPLOAD="$BENCH_DIR/answers_upload/$RUN_NAME/k$K.jsonl"
mkdir -p "$(dirname "$UPLOAD")"
"$PYTHON" -m llava.eval.eval_seed --annotation-file "$ANNOTATION" --result-file "$ANSWERS" \
    --result-upload-file "$UPLOAD" --save-json "$(score_json "$BENCH")" --k "$K"
log "leaderboard upload file: $UPLOAD"
