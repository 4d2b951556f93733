#!/bin/bash
# Qwen2.5-VL vizwiz: scripts/v1_5/eval/vizwiz.sh with the family's checkpoint and chat template.   bash scripts/qwen2_5_vl/eval/vizwiz.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/vizwiz.sh" "$@"
