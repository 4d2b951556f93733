#!/bin/bash
# LLaVA-Bench (in-the-wild): free-form answers reviewed by GPT against the reference GPT-4 answers;
# score = model / reference rating, x100. With OPENAI_API_KEY set this runs llava.eval.gpt_judge with
# LLaVA's rule.json (RULE_FILE), then summarises; existing reviews are summarised without a key.
#   bash scripts/v1_5/eval/llavabench.sh [K]
set -euo pipefail
BENCH=llavabench
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
QUESTIONS="$BENCH_DIR/questions.jsonl"
RULE_FILE="${RULE_FILE:-$BENCH_DIR/rule.json}"
need "$QUESTIONS" "LLaVA-Bench question file"
need "$BENCH_DIR/images" "LLaVA-Bench image folder"

run_driver llava.eval.model_vqa "$BENCH_DIR/answers/$RUN_NAME/k$K" \
    --question-file "$QUESTIONS" --image-folder "$BENCH_DIR/images"

REVIEWS="${LLAVABENCH_REVIEWS:-$BENCH_DIR/reviews/$RUN_NAME/k$K.jsonl}"
judge_cmd=("$PYTHON" -m llava.eval.gpt_judge llava-bench --questions "$QUESTIONS" --context "$BENCH_DIR/context.jsonl"
           --rule-file "$RULE_FILE" --answer1 "$BENCH_DIR/answers_gpt4.jsonl" --answer2 "$ANSWERS" --out "$REVIEWS")
[[ -n "${JUDGE_MODEL:-}" ]] && judge_cmd+=(--model "$JUDGE_MODEL")
if [[ -n "${OPENAI_API_KEY:-}" ]]; then
    n_questions=$(grep -c . "$QUESTIONS" || true)
    n_reviews=0
    [[ -f "$REVIEWS" ]] && n_reviews=$(grep -c . "$REVIEWS" || true)
    if [[ "$FRESH" == 1 || "$n_reviews" -lt "$n_questions" ]]; then
        need "$RULE_FILE" "LLaVA's review rules (llava/eval/table/rule.json of the LLaVA repo; set RULE_FILE)"
        need "$BENCH_DIR/answers_gpt4.jsonl" "LLaVA-Bench reference answers"
        need "$BENCH_DIR/context.jsonl" "LLaVA-Bench context (captions)"
        mkdir -p "$(dirname "$REVIEWS")"
        "${judge_cmd[@]}"
    fi
fi
if [[ -f "$REVIEWS" ]]; then
    "$PYTHON" -m llava.eval.summarize_gpt_review -f "$REVIEWS" --save-json "$(score_json "$BENCH")" --k "$K" \
        --run-answers "$ANSWERS"
else
    log "LLaVA-Bench needs a GPT judge. Answers are in $ANSWERS. Either export OPENAI_API_KEY and rerun
  this script (answers are reused), or run
    ${judge_cmd[*]}
    $PYTHON -m llava.eval.summarize_gpt_review -f $REVIEWS --save-json $RESULTS/llavabench/k$K.json --k $K"
fi
