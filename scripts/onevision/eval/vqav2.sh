#!/bin/bash
# LLaVA-OneVision vqav2: scripts/v1_5/eval/vqav2.sh with the family's checkpoint and chat template.   bash scripts/onevision/eval/vqav2.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/vqav2.sh" "$@"
