#!/bin/bash
# LLaVA-OneVision sqa: scripts/v1_5/eval/sqa.sh with the family's checkpoint and chat template.   bash scripts/onevision/eval/sqa.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/sqa.sh" "$@"
