# shellcheck shell=bash
# LLaVA-OneVision's benchmark scripts: its checkpoint and chat template over scripts/v1_5/eval (see family.sh).
FAMILY=onevision
FAMILY_CKPT=llava-hf/llava-onevision-qwen2-7b-ov-hf
source "$(dirname "${BASH_SOURCE[0]}")/../../v1_5/eval/family.sh"
