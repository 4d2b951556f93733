# shellcheck shell=bash
# Qwen2.5-VL's benchmark scripts: its checkpoint and chat template over scripts/v1_5/eval (see family.sh).
FAMILY=qwen2_5_vl
FAMILY_CKPT=Qwen/Qwen2.5-VL-7B-Instruct
source "$(dirname "${BASH_SOURCE[0]}")/../../v1_5/eval/family.sh"
