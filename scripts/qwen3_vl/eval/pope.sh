#!/bin/bash
# Qwen3-VL pope: scripts/v1_5/eval/pope.sh with the family's checkpoint and chat template.   bash scripts/qwen3_vl/eval/pope.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/pope.sh" "$@"
