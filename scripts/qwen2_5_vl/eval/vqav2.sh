#!/bin/bash
# Qwen2.5-VL vqav2: scripts/v1_5/eval/vqav2.sh with the family's checkpoint and chat template.   bash scripts/qwen2_5_vl/eval/vqav2.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/vqav2.sh" "$@"
