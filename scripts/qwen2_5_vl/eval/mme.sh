#!/bin/bash
# Qwen2.5-VL mme: scripts/v1_5/eval/mme.sh with the family's checkpoint and chat template.   bash scripts/qwen2_5_vl/eval/mme.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/mme.sh" "$@"
