#!/bin/bash
# MMBench-CN dev: like mmbench.sh, with the Chinese TSV and prompts (--lang cn).
#   bash scripts/v1_5/eval/mmbench_cn.sh [K]    MMBENCH_CN_SPLIT=mmbench_dev_cn_20231003 by default
set -euo pipefail
BENCH=mmbench_cn
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPLIT="${MMBENCH_CN_SPLIT:-mmbench_dev_cn_20231003}"
# prepare_hf writes mmbench_cn/; some copies of LLaVA's eval.zip keep the CN TSV in mmbench/.
BENCH_DIR="$(first_existing "$DATA_ROOT/$BENCH_FOLDER/$SPLIT.tsv" "$DATA_ROOT/mmbench/$SPLIT.tsv")"
BENCH_DIR="$(dirname "$BENCH_DIR")"
TSV="$BENCH_DIR/$SPLIT.tsv"
need "$TSV" "MMBench-CN TSV"

run_driver llava.eval.model_vqa_mmbench "$BENCH_DIR/answers/$SPLIT/$RUN_NAME/k$K" \
    --question-file "$TSV" --single-pred-prompt --lang cn

UPLOAD="$BENCH_DIR/answers_upload/$SPLIT/$RUN_NAME/k$K.xlsx"
"$PYTHON" -m llava.eval.eval_mmbench --result-file "$ANSWERS" --annotation-file "$TSV" --upload-file "$UPLOAD" \
    --save-json "$(score_json "$BENCH")" --k "$K" --benchmark-name "$BENCH_COLUMN"
log "submission file: $UPLOAD"
