#!/bin/bash
# VizWiz-VQA. Default split test: scored on the EvalAI server only, so this writes the upload file.
# With VIZWIZ_SPLIT=val (prepare_hf --split val writes val.json) it also scores VQA accuracy locally.
#   bash scripts/v1_5/eval/vizwiz.sh [K]
set -euo pipefail
BENCH=vizwiz
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
SPLIT="${VIZWIZ_SPLIT:-test}"
QUESTIONS="$BENCH_DIR/llava_$SPLIT.jsonl"
ANNOTATION="$BENCH_DIR/$SPLIT.json"
need "$QUESTIONS" "VizWiz question file"
need "$BENCH_DIR/$SPLIT" "VizWiz image folder"

ANSWERS_DIR="$BENCH_DIR/answers/$SPLIT/$RUN_NAME/k$K"
run_driver llava.eval.model_vqa_loader "$ANSWERS_DIR" \
    --question-file "$QUESTIONS" --image-folder "$BENCH_DIR/$SPLIT"

UPLOAD="$BENCH_DIR/answers_upload/$SPLIT/$RUN_NAME/k$K.json"
mkdir -p "$(dirname "$UPLOAD")"
"$PYTHON" -m llava.eval.eval_vqa submit --benchmark vizwiz --question-file "$QUESTIONS" \
    --result-file "$ANSWERS" --result-upload-file "$UPLOAD"
if [[ "$SPLIT" != test && -f "$ANNOTATION" ]]; then
    "$PYTHON" -m llava.eval.eval_vqa score --benchmark vizwiz --annotation-file "$ANNOTATION" \
        --question-file "$QUESTIONS" --result-file "$ANSWERS" --save-json "$(score_json "$BENCH")" --k "$K"
else
    log "VizWiz $SPLIT is scored on the EvalAI server: upload $UPLOAD"
fi
