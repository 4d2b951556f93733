# shellcheck shell=bash
# Qwen3-VL's benchmark scripts: its checkpoint and chat template over scripts/v1_5/eval (see family.sh).
FAMILY=qwen3_vl
FAMILY_CKPT=Qwen/Qwen3-VL-8B-Instruct
source "$(dirname "${BASH_SOURCE[0]}")/../../v1_5/eval/family.sh"
