#!/bin/bash
# GQA testdev-balanced: official predictions file, and exact-match accuracy when the questions json
# (with answers) is present.
#   bash scripts/v1_5/eval/gqa.sh [K]          GQA_SPLIT=llava_gqa_testdev_balanced by default
set -euo pipefail
BENCH=gqa
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
SPLIT="${GQA_SPLIT:-llava_gqa_testdev_balanced}"
TIER="${SPLIT#llava_gqa_}"                                    # testdev_balanced
QUESTIONS="$BENCH_DIR/$SPLIT.jsonl"
GQA_QUESTIONS_JSON="${GQA_QUESTIONS_JSON:-$BENCH_DIR/data/${TIER}_questions.json}"
need "$QUESTIONS" "GQA question file"
need "$BENCH_DIR/data/images" "GQA image folder"

ANSWERS_DIR="$BENCH_DIR/answers/$SPLIT/$RUN_NAME/k$K"
run_driver llava.eval.model_vqa_loader "$ANSWERS_DIR" \
    --question-file "$QUESTIONS" --image-folder "$BENCH_DIR/data/images"

PREDICTIONS="$ANSWERS_DIR/${TIER}_predictions.json"
if [[ -f "$GQA_QUESTIONS_JSON" ]]; then
    "$PYTHON" -m llava.eval.eval_gqa --result-file "$ANSWERS" --prediction-file "$PREDICTIONS" \
        --questions "$GQA_QUESTIONS_JSON" --save-json "$(score_json "$BENCH")" --k "$K"
else
    "$PYTHON" -m llava.eval.eval_gqa --result-file "$ANSWERS" --prediction-file "$PREDICTIONS"
    log "no $GQA_QUESTIONS_JSON: predictions in $PREDICTIONS, not scored (GQA's eval.py can score them)"
fi
