#!/bin/bash
# ScienceQA test (CQM-A prompts, single-letter answers): accuracy overall and on image problems
# (headline = IMG accuracy, the paper's SQA-IMG).
#   bash scripts/v1_5/eval/sqa.sh [K]
set -euo pipefail
BENCH=sqa
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
QUESTIONS="$BENCH_DIR/llava_test_CQM-A.json"
need "$QUESTIONS" "ScienceQA question file"
need "$BENCH_DIR/images/test" "ScienceQA test image folder"
need "$BENCH_DIR/problems.json" "ScienceQA problems.json"
need "$BENCH_DIR/pid_splits.json" "ScienceQA pid_splits.json"

ANSWERS_DIR="$BENCH_DIR/answers/$RUN_NAME/k$K"
run_driver llava.eval.model_vqa_science "$ANSWERS_DIR" \
    --question-file "$QUESTIONS" --image-folder "$BENCH_DIR/images/test" --single-pred-prompt

"$PYTHON" -m llava.eval.eval_science_qa --base-dir "$BENCH_DIR" --result-file "$ANSWERS" \
    --output-file "$ANSWERS_DIR/output.json" --output-result "$ANSWERS_DIR/result.json" --split test \
    --save-json "$(score_json "$BENCH")" --k "$K"
