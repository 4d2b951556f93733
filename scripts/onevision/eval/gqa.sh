#!/bin/bash
# LLaVA-OneVision gqa: scripts/v1_5/eval/gqa.sh with the family's checkpoint and chat template.   bash scripts/onevision/eval/gqa.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/gqa.sh" "$@"
