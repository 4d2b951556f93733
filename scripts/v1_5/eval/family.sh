# shellcheck shell=bash
# Shared settings of a model family's benchmark scripts (scripts/<family>/eval/settings.sh sets FAMILY and
# FAMILY_CKPT, then sources this); sourced, never run on its own. Each scripts/<family>/eval/<bench>.sh runs
# its scripts/v1_5/eval/ counterpart (same data, drivers and scorers) with:
#   CKPT          model path or id          (FAMILY_CKPT, the family's released 7-8B checkpoint)
#   CONV_MODE     chat_template             (the checkpoint's own chat template: one user turn, the image,
#                                            then the question; a conv mode name builds LLaVA prompts instead)
# and every other override of scripts/v1_5/eval/common.sh. Answers and scores live apart per family:
# the run name is <family>-<ckpt name>. K is required (no family has LLaVA's 576 tokens per image).
set -euo pipefail
: "${FAMILY:?settings.sh sets FAMILY}" "${FAMILY_CKPT:?settings.sh sets FAMILY_CKPT}"
if (( $# < 1 )); then
    echo "error: give K, the visual tokens kept per image (e.g. 64); $FAMILY images have a varying number N_i" >&2
    exit 2
fi
export FAMILY
export CKPT="${CKPT:-$FAMILY_CKPT}"
export CONV_MODE="${CONV_MODE:-chat_template}"
V15_EVAL="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
