#!/bin/bash
# LLaVA-OneVision mmvet: scripts/v1_5/eval/mmvet.sh with the family's checkpoint and chat template.   bash scripts/onevision/eval/mmvet.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/mmvet.sh" "$@"
