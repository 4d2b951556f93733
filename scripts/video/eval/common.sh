# shellcheck shell=bash
# Shared code of the Video-LLaVA video-QA scripts in this folder; sourced, never run on its own.
#
#   bash scripts/video/eval/<bench>.sh [K]    K = tokens kept per frame (1..256; the LLM sees 8 x K),
#                                             or 'full' (the default): unpruned, 8 x 257 tokens
#
# Each script answers the benchmark's first NUM_SAMPLES questions with llava.eval.model_video_qa, checks and
# merges the answers, has the judge rate them (llava.eval.eval_video_qa: Video-LLaVA's GPT-3.5 protocol) and
# writes the score record RESULTS/<bench>/k<K>.json (full.json unpruned) that
# `python -m llava.eval.summarize RESULTS --video` turns into FasterVLM's video table. K=256 keeps every
# patch and drops each frame's [CLS] token: FasterVLM's "2048 tokens" row (docs/VIDEO.md).
#
# Environment overrides (docs/VIDEO.md):
#   CKPT          model path or id                       (LanguageBind/Video-LLaVA-7B-hf)
#   METHOD        pruning method                         (fastervlm)
#   METHOD_ARGS   method options "key=value,..."         (none)
#   DATA_ROOT     benchmark data                         (./playground/data/eval)
#   RUN_NAME      answers sub-folder name                (<ckpt name>, plus -<method>[-<args>] when not the default)
#   RESULTS       score records for the video table      (./outputs/results/<RUN_NAME>)
#   NUM_SAMPLES   first N questions, or 'all'            (1000, as FasterVLM's table)
#   NUM_FRAMES    frames per video                       (8)
#   VIDEO_MODE    frame (K per frame) or temporal        (frame)
#   BATCH_SIZE, DEVICE, DTYPE, MAX_NEW_TOKENS, CONV_MODE (llava_v1), EXTRA_ARGS (driver flags), PYTHON
#   FRESH=1       delete this K's answers and judgements first (otherwise a rerun resumes both)
#   CUDA_VISIBLE_DEVICES="0,1,..."  one torchrun rank per listed GPU, answers merged with the merge checks
# The judge (needs OPENAI_API_KEY, or a JUDGE_BASE_URL of your own OpenAI-compatible server):
#   JUDGE_MODEL (gpt-3.5-turbo), JUDGE_BASE_URL (OPENAI_BASE_URL, else OpenAI), JUDGE_KEY_ENV (OPENAI_API_KEY),
#   JUDGE_RPM (requests per minute, no limit), JUDGE_PROMPT_FILE (e.g. the official prompt), JUDGE_ARGS (more flags)

set -euo pipefail

K="${1-full}"  # no argument: full; an empty one (an unset variable, say) is refused below
if [[ "$K" == full ]]; then
    K_LABEL=full
elif [[ "$K" =~ ^[0-9]+$ ]] && (( 10#$K >= 1 && 10#$K <= 256 )); then
    K=$((10#$K))
    K_LABEL="k$K"
else
    echo "error: K (the first argument) must be a positive integer (tokens per frame) up to 256 (a frame's patches)" \
         "or 'full', got '$K'" >&2
    exit 2
fi

PYTHON="${PYTHON:-python}"
CKPT="${CKPT:-LanguageBind/Video-LLaVA-7B-hf}"
METHOD="${METHOD:-fastervlm}"
METHOD_ARGS="${METHOD_ARGS:-}"
DATA_ROOT="${DATA_ROOT:-./playground/data/eval}"
NUM_SAMPLES="${NUM_SAMPLES:-1000}"
NUM_FRAMES="${NUM_FRAMES:-8}"
VIDEO_MODE="${VIDEO_MODE:-frame}"
BATCH_SIZE="${BATCH_SIZE:-1}"
DEVICE="${DEVICE:-auto}"
DTYPE="${DTYPE:-auto}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-}"
CONV_MODE="${CONV_MODE:-llava_v1}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
FRESH="${FRESH:-0}"

source "$(dirname "${BASH_SOURCE[0]}")/../../ckpt_name.sh"

CKPT_NAME="$(ckpt_name "$CKPT")"
if [[ -z "${RUN_NAME:-}" ]]; then
    RUN_NAME="$CKPT_NAME"   # answers of another method (or options) are never resumed into these ones
    if [[ "$METHOD" != fastervlm || -n "$METHOD_ARGS" ]]; then
        RUN_NAME+="-$METHOD"
        [[ -n "$METHOD_ARGS" ]] && RUN_NAME+="-$(printf '%s' "$METHOD_ARGS" | tr -c 'A-Za-z0-9._=-' '_')"
    fi
    [[ "$VIDEO_MODE" != frame ]] && RUN_NAME+="-$VIDEO_MODE"
    [[ "$NUM_FRAMES" != 8 ]] && RUN_NAME+="-f$NUM_FRAMES"
fi
RESULTS="${RESULTS:-./outputs/results/$RUN_NAME}"

log() { printf '[%s %s] %s\n' "${BENCH:-video}" "$K_LABEL" "$*" >&2; }
die() { printf '[%s %s] error: %s\n' "${BENCH:-video}" "$K_LABEL" "$*" >&2; exit 1; }

# The benchmark's catalogue record: its prepare_hf name, data folder, table column and video folder.
record="$("$PYTHON" -m llava.eval.catalogue video-fields "$BENCH")" || die "benchmark $BENCH is not a video-QA record"
IFS=$'\t' read -r CATALOGUE_NAME BENCH_FOLDER BENCH_COLUMN VIDEO_SUB <<< "$record"
unset record
BENCH_DIR="$DATA_ROOT/$BENCH_FOLDER"
QUESTIONS="$BENCH_DIR/llava_test_q.json"
GT_ANSWERS="$BENCH_DIR/llava_test_a.json"
VIDEOS="$BENCH_DIR/$VIDEO_SUB"

need() {  # need PATH WHAT: stop with the command that builds the data
    [[ -e "$1" ]] && return 0
    die "$2 not found: $1
  Build it from a local copy of Video-LLaVA's $BENCH_FOLDER folder (test_q.json, test_a.json, $VIDEO_SUB/):
  $PYTHON -m llava.eval.prepare_hf --benchmark $CATALOGUE_NAME --dataset <that copy> --out-dir $BENCH_DIR"
}

# run_video_qa: answer, merge, judge and record this benchmark at this K.
run_video_qa() {
    need "$QUESTIONS" "$BENCH_COLUMN question file"
    need "$GT_ANSWERS" "$BENCH_COLUMN answer file"
    need "$VIDEOS" "$BENCH_COLUMN video folder"
    local dir="$BENCH_DIR/answers/$RUN_NAME/$K_LABEL"
    local judgements="$BENCH_DIR/judgements/$RUN_NAME/$K_LABEL.jsonl"
    if [[ "$FRESH" == 1 ]]; then
        log "FRESH=1: removing $dir and $judgements"
        rm -rf -- "$dir" "$judgements"
    fi
    mkdir -p "$dir"
    local -a args gpus extra samples=()
    [[ "$NUM_SAMPLES" != all ]] && samples=(--num-samples "$NUM_SAMPLES")
    args=(--model-path "$CKPT" --question-file "$QUESTIONS" --gt-answers-file "$GT_ANSWERS" --video-folder "$VIDEOS"
          --num-frames "$NUM_FRAMES" --video-mode "$VIDEO_MODE" "${samples[@]}" --conv-mode "$CONV_MODE"
          --temperature 0 --pruning-method "$METHOD" --batch-size "$BATCH_SIZE" --device "$DEVICE"
          --torch-dtype "$DTYPE")
    [[ "$K_LABEL" != full ]] && args+=(--visual-token-num "$K")
    [[ -n "$METHOD_ARGS" ]] && args+=(--pruning-args "$METHOD_ARGS")
    [[ -n "$MAX_NEW_TOKENS" ]] && args+=(--max_new_tokens "$MAX_NEW_TOKENS")
    read -ra extra <<< "$EXTRA_ARGS"
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then IFS=',' read -ra gpus <<< "$CUDA_VISIBLE_DEVICES"; else gpus=(""); fi

    ANSWERS="$dir/merge.jsonl"
    rm -f -- "$ANSWERS"  # a merged file of an earlier run must not survive a failed check of this one
    log "model_video_qa: $CKPT_NAME, $K_LABEL per frame, method $METHOD, ${#gpus[@]} chunk(s) -> $dir"
    if (( ${#gpus[@]} == 1 )); then
        local -a env_prefix=()
        [[ -n "${gpus[0]}" ]] && env_prefix=(env "CUDA_VISIBLE_DEVICES=${gpus[0]}")
        "${env_prefix[@]}" "$PYTHON" -m llava.eval.model_video_qa "${args[@]}" --answers-file "$dir/1_0.jsonl" \
            --num-chunks 1 --chunk-idx 0 "${extra[@]}"
        "$PYTHON" -m llava.eval.merge --answers-file "$ANSWERS" "$dir/1_0.jsonl" \
            || die "the answers in $dir/1_0.jsonl do not pass the merge checks (see above); fix or delete them (FRESH=1)"
    else
        "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "${#gpus[@]}" -m llava.eval.model_video_qa \
            "${args[@]}" --answers-file "$ANSWERS" --num-chunks 1 --chunk-idx 0 "${extra[@]}" \
            || die "the ${#gpus[@]}-rank run or its checked merge failed (see above); rerun to resume"
    fi
    log "$(wc -l < "$ANSWERS" | tr -d ' ') answers in $ANSWERS"

    local key_env="${JUDGE_KEY_ENV:-OPENAI_API_KEY}" record_path="$RESULTS/$BENCH/$K_LABEL.json"
    local -a judge=(--answers-file "$ANSWERS" --judgements "$judgements" --benchmark "$CATALOGUE_NAME"
                    --question-file "$QUESTIONS" "${samples[@]}" --api-key-env "$key_env"
                    --save-json "$record_path")
    [[ "$K_LABEL" != full ]] && judge+=(--k "$K")
    [[ -n "${JUDGE_MODEL:-}" ]] && judge+=(--judge-model "$JUDGE_MODEL")
    [[ -n "${JUDGE_BASE_URL:-}" ]] && judge+=(--judge-base-url "$JUDGE_BASE_URL")
    [[ -n "${JUDGE_RPM:-}" ]] && judge+=(--requests-per-minute "$JUDGE_RPM")
    [[ -n "${JUDGE_PROMPT_FILE:-}" ]] && judge+=(--prompt-file "$JUDGE_PROMPT_FILE")
    local -a judge_extra
    read -ra judge_extra <<< "${JUDGE_ARGS:-}"
    if [[ -z "${!key_env:-}" && -z "${JUDGE_BASE_URL:-}" && -z "${OPENAI_BASE_URL:-}" ]]; then
        log "the answers are in $ANSWERS; judging needs $key_env (OpenAI) or JUDGE_BASE_URL (your own
  OpenAI-compatible server). Set one and rerun this script (the answers are reused), or run
  $PYTHON -m llava.eval.eval_video_qa ${judge[*]}"
        return 0
    fi
    mkdir -p "$RESULTS/$BENCH"
    "$PYTHON" -m llava.eval.eval_video_qa "${judge[@]}" --no-progress "${judge_extra[@]}"
}
