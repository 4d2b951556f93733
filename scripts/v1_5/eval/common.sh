# shellcheck shell=bash
# Shared code of the LLaVA-1.5 benchmark scripts in this folder; sourced, never run on its own.
#
#   bash scripts/v1_5/eval/<bench>.sh [K]        K = visual tokens kept per image (default 576 = all)
#
# Environment overrides (see EVAL.md):
#   CKPT          model path or id                    (liuhaotian/llava-v1.5-7b)
#   METHOD        pruning method                      (fastervlm)
#   METHOD_ARGS   method options "key=value,..."      (none)
#   DATA_ROOT     benchmark data                      (./playground/data/eval)
#   RUN_NAME      answers sub-folder name             (<ckpt name>, plus -<method>[-<args>] when not the default,
#                                                      plus RUN_SUFFIX)
#   RESULTS       score records for the paper table   (./outputs/results/<RUN_NAME>)
#   BATCH_SIZE    questions per generate() call       (1)
#   DEVICE, DTYPE --device / --torch-dtype            (auto / auto)
#   MAX_NEW_TOKENS  --max_new_tokens                  (the driver's default)
#   EXTRA_ARGS    more driver flags, word-split       (none)
#   CONV_MODE     conversation template               (vicuna_v1; chat_template: no --conv-mode, the
#                                                      checkpoint's own chat template, for processor families)
#   FAMILY        a model family's scripts (scripts/<family>/eval, family.sh): its answers and scores live
#                 apart, under the run name <family>-<ckpt name>
#   FRESH=1       delete this K's answers first (otherwise a rerun resumes)
#   PYTHON        interpreter                         (python)
#   CUDA_VISIBLE_DEVICES="0,1,..."  one torchrun rank per listed GPU, answers merged with the merge checks;
#                 unset (or empty): one chunk in this process's environment.

set -euo pipefail

K="${1:-576}"
if ! [[ "$K" =~ ^[0-9]+$ ]] || (( 10#$K < 1 )); then
    echo "error: K (the first argument) must be a positive integer, got '$K'" >&2
    exit 2
fi
K=$((10#$K))

PYTHON="${PYTHON:-python}"
CKPT="${CKPT:-liuhaotian/llava-v1.5-7b}"
METHOD="${METHOD:-fastervlm}"
METHOD_ARGS="${METHOD_ARGS:-}"
DATA_ROOT="${DATA_ROOT:-./playground/data/eval}"
BATCH_SIZE="${BATCH_SIZE:-1}"
DEVICE="${DEVICE:-auto}"
DTYPE="${DTYPE:-auto}"
MAX_NEW_TOKENS="${MAX_NEW_TOKENS:-}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
CONV_MODE="${CONV_MODE:-vicuna_v1}"
FRESH="${FRESH:-0}"

source "$(dirname "${BASH_SOURCE[0]}")/../../ckpt_name.sh"

CKPT_NAME="$(ckpt_name "$CKPT")"
if [[ -z "${RUN_NAME:-}" ]]; then
    # Answers of another method (or other method options) must never be resumed into these ones.
    RUN_NAME="${FAMILY:+$FAMILY-}$CKPT_NAME"
    if [[ "$METHOD" != fastervlm || -n "$METHOD_ARGS" ]]; then
        RUN_NAME+="-$METHOD"
        [[ -n "$METHOD_ARGS" ]] && RUN_NAME+="-$(printf '%s' "$METHOD_ARGS" | tr -c 'A-Za-z0-9._=-' '_')"
    fi
    RUN_NAME+="${RUN_SUFFIX:-}"   # e.g. the LLaVA-NeXT pruning mode (scripts/v1_6)
fi
RESULTS="${RESULTS:-./outputs/results/$RUN_NAME}"

log() { printf '[%s k%s] %s\n' "${BENCH:-eval}" "$K" "$*" >&2; }
die() { printf '[%s k%s] error: %s\n' "${BENCH:-eval}" "$K" "$*" >&2; exit 1; }

# The benchmark's catalogue record (llava.eval.catalogue): its prepare_hf name, data folder under DATA_ROOT
# and paper column, so no script repeats them.
CATALOGUE_NAME="" BENCH_FOLDER="" BENCH_COLUMN=""
if [[ -n "${BENCH:-}" ]]; then
    record="$("$PYTHON" -m llava.eval.catalogue fields "$BENCH")" || die "benchmark $BENCH is not in llava.eval.catalogue"
    IFS=$'\t' read -r CATALOGUE_NAME BENCH_FOLDER BENCH_COLUMN <<< "$record"
    unset record
fi

# need PATH WHAT: stop with a hint when a benchmark file or folder is missing.
need() {
    [[ -e "$1" ]] && return 0
    die "$2 not found: $1
  Build the data with: $PYTHON -m llava.eval.prepare_hf --benchmark ${CATALOGUE_NAME:-<bench>} --out-dir ${BENCH_DIR:-$DATA_ROOT/<bench>}
  (or set DATA_ROOT; EVAL.md describes the layout)"
}

# first_existing PATH...: the first path that exists, else the first one given.
first_existing() {
    local p
    for p in "$@"; do
        [[ -e "$p" ]] && { printf '%s\n' "$p"; return 0; }
    done
    printf '%s\n' "$1"
}

# score_json NAME: where a scorer writes its --save-json record for this K (folder created).
score_json() {
    mkdir -p "$RESULTS/$1"
    printf '%s\n' "$RESULTS/$1/k$K.json"
}

# run_driver MODULE ANSWERS_DIR [DRIVER ARGS...]
# Answers the questions with MODULE and sets ANSWERS to the checked, merged ANSWERS_DIR/merge.jsonl.
# Nothing reaches a scorer unchecked: a missing, duplicated or foreign answer, or answers made with
# other settings, stop the script before scoring.
#   one chunk (CUDA_VISIBLE_DEVICES unset or one GPU): `python -m MODULE` answers into ANSWERS_DIR/1_0.jsonl,
#     then `python -m llava.eval.merge` checks it (against the question file when it is LLaVA jsonl) into merge.jsonl;
#   several GPUs: `torchrun --nproc-per-node <#GPUs> -m MODULE`, one rank per GPU answering its contiguous part
#     into ANSWERS_DIR/merge.rank<r>-of-<n>.jsonl; rank 0 merges them with the same checks, for every question
#     format (ScienceQA's JSON and MMBench's TSV included), from the driver's own question list.
# The drivers resume their answers files, so a rerun continues where it stopped; FRESH=1 deletes ANSWERS_DIR first.
run_driver() {
    local module="$1" dir="$2"
    shift 2
    local -a gpus common extra
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        IFS=',' read -ra gpus <<< "$CUDA_VISIBLE_DEVICES"
    else
        gpus=("")
    fi
    local chunks=${#gpus[@]}
    if [[ "$FRESH" == 1 && -d "$dir" ]]; then
        log "FRESH=1: removing $dir"
        rm -rf -- "$dir"
    fi
    mkdir -p "$dir"
    common=(--model-path "$CKPT" --temperature 0
            --visual-token-num "$K" --pruning-method "$METHOD"
            --batch-size "$BATCH_SIZE" --device "$DEVICE" --torch-dtype "$DTYPE")
    [[ "$CONV_MODE" != chat_template ]] && common+=(--conv-mode "$CONV_MODE")
    [[ -n "$METHOD_ARGS" ]] && common+=(--pruning-args "$METHOD_ARGS")
    [[ -n "$MAX_NEW_TOKENS" ]] && common+=(--max_new_tokens "$MAX_NEW_TOKENS")
    read -ra extra <<< "$EXTRA_ARGS"

    ANSWERS="$dir/merge.jsonl"
    rm -f -- "$ANSWERS"  # a merged file of an earlier run must not survive a failed check of this one
    log "$module: $CKPT_NAME, K=$K, method $METHOD, $chunks chunk(s) -> $dir"
    if (( chunks == 1 )); then
        local -a env_prefix=() check=()
        [[ -n "${gpus[0]}" ]] && env_prefix=(env "CUDA_VISIBLE_DEVICES=${gpus[0]}")
        "${env_prefix[@]}" "$PYTHON" -m "$module" "$@" "${common[@]}" \
            --answers-file "$dir/1_0.jsonl" --num-chunks 1 --chunk-idx 0 "${extra[@]}"
        local questions
        questions="$(driver_question_file "$@")"
        [[ "$questions" == *.jsonl ]] && check=(--question-file "$questions")
        "$PYTHON" -m llava.eval.merge "${check[@]}" --answers-file "$ANSWERS" "$dir/1_0.jsonl" \
            || die "the answers in $dir/1_0.jsonl do not pass the merge checks (see above); fix or delete them (FRESH=1)"
    else
        "$PYTHON" -m torch.distributed.run --standalone --nproc-per-node "$chunks" -m "$module" "$@" "${common[@]}" \
            --answers-file "$ANSWERS" --num-chunks 1 --chunk-idx 0 "${extra[@]}" \
            || die "the $chunks-rank run or its checked merge failed (see above); rerun to resume"
        [[ -f "$ANSWERS" ]] || die "the $chunks-rank run wrote no merged answers file $ANSWERS"
    fi
    log "$(wc -l < "$ANSWERS" | tr -d ' ') answers in $ANSWERS"
}

# driver_question_file [DRIVER ARGS...]: the value of --question-file among the driver's arguments (or nothing).
driver_question_file() {
    while (( $# )); do
        if [[ "$1" == --question-file ]]; then
            printf '%s\n' "${2:-}"
            return 0
        fi
        shift
    done
}
