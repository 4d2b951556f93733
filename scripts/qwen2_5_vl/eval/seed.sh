#!/bin/bash
# Qwen2.5-VL seed: scripts/v1_5/eval/seed.sh with the family's checkpoint and chat template.   bash scripts/qwen2_5_vl/eval/seed.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/seed.sh" "$@"
