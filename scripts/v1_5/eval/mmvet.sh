#!/bin/bash
# MM-Vet: free-form answers converted to the grader's {"v1_<id>": answer} JSON. Graded by GPT:
# with OPENAI_API_KEY set this runs llava.eval.gpt_judge (JUDGE_RUNS runs, JUDGE_MODEL), then
# summarises (MMVET_PROMPT_FILE: grading prompt with {question} {answer} {prediction}); a grade
# file already in place (e.g. from the official grader, MMVET_GRADE_FILE) is
# summarised without a key.
#   bash scripts/v1_5/eval/mmvet.sh [K]
set -euo pipefail
BENCH=mmvet
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
QUESTIONS="$BENCH_DIR/llava-mm-vet.jsonl"
MMVET_JSON="$BENCH_DIR/mm-vet.json"
need "$QUESTIONS" "MM-Vet question file"
need "$BENCH_DIR/images" "MM-Vet image folder"

run_driver llava.eval.model_vqa "$BENCH_DIR/answers/$RUN_NAME/k$K" \
    --question-file "$QUESTIONS" --image-folder "$BENCH_DIR/images"

RESULT_DIR="$BENCH_DIR/results/$RUN_NAME"
CONVERTED="$RESULT_DIR/k$K.json"
mkdir -p "$RESULT_DIR"
"$PYTHON" -m llava.eval.convert_mmvet_for_eval --src "$ANSWERS" --dst "$CONVERTED"

RUNS="${JUDGE_RUNS:-1}"
GRADES="${MMVET_GRADE_FILE:-$RESULT_DIR/k${K}_grade-${RUNS}runs.json}"
judge_args=()
[[ -n "${JUDGE_MODEL:-}" ]] && judge_args+=(--model "$JUDGE_MODEL")
[[ -n "${MMVET_PROMPT_FILE:-}" ]] && judge_args+=(--prompt-file "$MMVET_PROMPT_FILE")   # e.g. the official prompt
if [[ -n "${OPENAI_API_KEY:-}" ]]; then
    need "$MMVET_JSON" "MM-Vet ground truth mm-vet.json"
    [[ "$FRESH" == 1 ]] && rm -f -- "$GRADES"
    "$PYTHON" -m llava.eval.gpt_judge mmvet --mmvet-json "$MMVET_JSON" --results "$CONVERTED" \
        --runs "$RUNS" --out "$GRADES" "${judge_args[@]}"
fi
if [[ -f "$GRADES" ]]; then
    caps=()
    [[ -f "$MMVET_JSON" ]] && caps=(--mmvet-json "$MMVET_JSON")
    "$PYTHON" -m llava.eval.eval_mmvet_summary --grade-file "$GRADES" "${caps[@]}" \
        --save-json "$(score_json "$BENCH")" --k "$K" --run-answers "$ANSWERS"
else
    log "MM-Vet needs a GPT grader. Answers converted to $CONVERTED. Either
  - export OPENAI_API_KEY and rerun this script (answers are reused), or
  - $PYTHON -m llava.eval.gpt_judge mmvet --mmvet-json $MMVET_JSON --results $CONVERTED --out $GRADES
    (or upload $CONVERTED to the official MM-Vet grader and save its grade file as $GRADES), then
  - $PYTHON -m llava.eval.eval_mmvet_summary --grade-file $GRADES --save-json $RESULTS/mmvet/k$K.json --k $K"
fi
