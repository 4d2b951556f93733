#!/bin/bash
# TextVQA val (with LLaVA's "Reference OCR token" prompts): VQA accuracy against TextVQA_0.5.1_val.json.
#   bash scripts/v1_5/eval/textvqa.sh [K]
set -euo pipefail
BENCH=textvqa
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
QUESTIONS="${TEXTVQA_QUESTIONS:-$(first_existing "$BENCH_DIR/llava_textvqa_val_v051_ocr.jsonl" \
    "$BENCH_DIR/llava_textvqa_val_v051_noocr.jsonl")}"
ANNOTATION="$BENCH_DIR/TextVQA_0.5.1_val.json"
need "$QUESTIONS" "TextVQA question file"
need "$BENCH_DIR/train_images" "TextVQA image folder"
[[ "$QUESTIONS" == *noocr* ]] && log "note: prompts without OCR tokens; not comparable to LLaVA-1.5's TextVQA numbers"

run_driver llava.eval.model_vqa_loader "$BENCH_DIR/answers/$RUN_NAME/k$K" \
    --question-file "$QUESTIONS" --image-folder "$BENCH_DIR/train_images"

if [[ -f "$ANNOTATION" ]]; then
    "$PYTHON" -m llava.eval.eval_textvqa --annotation-file "$ANNOTATION" --result-file "$ANSWERS" \
        --save-json "$(score_json "$BENCH")" --k "$K"
else
    log "no $ANNOTATION: answers written to $ANSWERS but not scored"
fi
