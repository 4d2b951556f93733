#!/bin/bash
# MMBench (English) dev: CircularEval accuracy (the TSV already holds the circular copies) and the
# submission xlsx. A split without gold answers (test) only gets the xlsx, for the MMBench server.
#   bash scripts/v1_5/eval/mmbench.sh [K]       MMBENCH_SPLIT=mmbench_dev_20230712 by default
set -euo pipefail
BENCH=mmbench
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
SPLIT="${MMBENCH_SPLIT:-mmbench_dev_20230712}"
TSV="$BENCH_DIR/$SPLIT.tsv"
need "$TSV" "MMBench TSV"

run_driver llava.eval.model_vqa_mmbench "$BENCH_DIR/answers/$SPLIT/$RUN_NAME/k$K" \
    --question-file "$TSV" --single-pred-prompt --lang en

UPLOAD="$BENCH_DIR/answers_upload/$SPLIT/$RUN_NAME/k$K.xlsx"
"$PYTHON" -m llava.eval.eval_mmbench --result-file "$ANSWERS" --annotation-file "$TSV" --upload-file "$UPLOAD" \
    --save-json "$(score_json "$BENCH")" --k "$K" --benchmark-name "$BENCH_COLUMN"
log "submission file: $UPLOAD"
