#!/bin/bash
# MME: answers converted into the official eval_tool layout (one <subtask>.txt each), scored as
# acc + acc+ per subtask; headline = perception (cognition is in the record's metrics).
#   bash scripts/v1_5/eval/mme.sh [K]
set -euo pipefail
BENCH=mme
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
QUESTIONS="$BENCH_DIR/llava_mme.jsonl"
IMAGES="$BENCH_DIR/MME_Benchmark_release_version"
# Ground truth: prepare_hf's TSV, else the MME release folder itself (question/answer .txt files).
GT="${MME_GT:-$(first_existing "$BENCH_DIR/ground_truth.tsv" "$IMAGES")}"
need "$QUESTIONS" "MME question file"
need "$IMAGES" "MME image folder"
need "$GT" "MME ground truth"

ANSWERS_DIR="$BENCH_DIR/answers/$RUN_NAME/k$K"
run_driver llava.eval.model_vqa_loader "$ANSWERS_DIR" \
    --question-file "$QUESTIONS" --image-folder "$IMAGES"

"$PYTHON" -m llava.eval.eval_mme --answers-file "$ANSWERS" --gt "$GT" --results-dir "$ANSWERS_DIR/eval_tool" \
    --save-json "$(score_json "$BENCH")" --k "$K"
