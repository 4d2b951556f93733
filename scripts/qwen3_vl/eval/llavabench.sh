#!/bin/bash
# Qwen3-VL llavabench: scripts/v1_5/eval/llavabench.sh with the family's checkpoint and chat template.   bash scripts/qwen3_vl/eval/llavabench.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/llavabench.sh" "$@"
