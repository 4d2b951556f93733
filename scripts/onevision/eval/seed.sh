#!/bin/bash
# LLaVA-OneVision seed: scripts/v1_5/eval/seed.sh with the family's checkpoint and chat template.   bash scripts/onevision/eval/seed.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/seed.sh" "$@"
