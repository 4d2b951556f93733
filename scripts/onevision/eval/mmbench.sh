#!/bin/bash
# LLaVA-OneVision mmbench: scripts/v1_5/eval/mmbench.sh with the family's checkpoint and chat template.   bash scripts/onevision/eval/mmbench.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/mmbench.sh" "$@"
