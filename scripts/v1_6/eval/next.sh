# shellcheck shell=bash
# Shared settings of the LLaVA-1.6 (NeXT) benchmark scripts; sourced, never run on its own.
# Each script runs its scripts/v1_5/eval/ counterpart (same data, drivers and scorers) with:
#   CKPT          model path or id          (liuhaotian/llava-v1.6-vicuna-7b)
#   ANYRES_MODE   faithful | paper          (faithful: one budget K per image over the unmodified
#                                            LLaVA-NeXT; paper: FasterVLM's fixed 2x2 grid, K per view)
#   CONV_MODE     vicuna_v1 for the vicuna checkpoints; mistral_instruct / chatml_direct for the others
# and every other override of scripts/v1_5/eval/common.sh. Answers and scores of the two modes live
# in separate folders (the run name ends in -faithful or -paper).
set -euo pipefail
export CKPT="${CKPT:-liuhaotian/llava-v1.6-vicuna-7b}"
export ANYRES_MODE="${ANYRES_MODE:-faithful}"
case "$ANYRES_MODE" in
    faithful|paper) ;;
    *) echo "error: ANYRES_MODE must be faithful or paper, got '$ANYRES_MODE'" >&2; exit 2 ;;
esac
export EXTRA_ARGS="--anyres-mode $ANYRES_MODE ${EXTRA_ARGS:-}"
export RUN_SUFFIX="-$ANYRES_MODE"
V15_EVAL="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../v1_5/eval" && pwd)"
