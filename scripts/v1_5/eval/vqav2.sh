#!/bin/bash
# VQAv2. Default split test-dev2015: its answers are on the EvalAI server only, so this writes the
# upload file. With a val split (VQAV2_SPLIT=llava_vqav2_mscoco_val2014) and its annotation file,
# it scores VQA accuracy locally as well.
#   bash scripts/v1_5/eval/vqav2.sh [K]
set -euo pipefail
BENCH=vqav2
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
SPLIT="${VQAV2_SPLIT:-llava_vqav2_mscoco_test-dev2015}"
QUESTIONS="$BENCH_DIR/$SPLIT.jsonl"
if [[ "$SPLIT" == *val2014* ]]; then
    IMAGES="${VQAV2_IMAGES:-$BENCH_DIR/val2014}"
    ANNOTATION="${VQAV2_ANNOTATION:-$BENCH_DIR/v2_mscoco_val2014_annotations.json}"
else
    IMAGES="${VQAV2_IMAGES:-$BENCH_DIR/test2015}"
    ANNOTATION="${VQAV2_ANNOTATION:-}"
fi
need "$QUESTIONS" "VQAv2 question file"
need "$IMAGES" "VQAv2 image folder"

run_driver llava.eval.model_vqa_loader "$BENCH_DIR/answers/$SPLIT/$RUN_NAME/k$K" \
    --question-file "$QUESTIONS" --image-folder "$IMAGES"

if [[ -n "$ANNOTATION" && -f "$ANNOTATION" ]]; then
    "$PYTHON" -m llava.eval.eval_vqa score --benchmark vqav2 --annotation-file "$ANNOTATION" \
        --result-file "$ANSWERS" --save-json "$(score_json "$BENCH")" --k "$K"
else
    # EvalAI wants every test2015 question; LLaVA's full list fills the ones test-dev lacks with "".
    FULL="${VQAV2_UPLOAD_QUESTIONS:-$(first_existing "$BENCH_DIR/llava_vqav2_mscoco_test2015.jsonl" "$QUESTIONS")}"
    UPLOAD="$BENCH_DIR/answers_upload/$SPLIT/$RUN_NAME/k$K.json"
    mkdir -p "$(dirname "$UPLOAD")"
    "$PYTHON" -m llava.eval.eval_vqa submit --benchmark vqav2 --question-file "$FULL" \
        --result-file "$ANSWERS" --result-upload-file "$UPLOAD"
    log "VQAv2 $SPLIT is scored on the EvalAI server: upload $UPLOAD"
fi
