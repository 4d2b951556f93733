#!/bin/bash
# LLaVA-OneVision mme: scripts/v1_5/eval/mme.sh with the family's checkpoint and chat template.   bash scripts/onevision/eval/mme.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/mme.sh" "$@"
