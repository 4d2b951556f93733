#!/bin/bash
# LLaVA-OneVision mmbench_cn: scripts/v1_5/eval/mmbench_cn.sh with the family's checkpoint and chat template.   bash scripts/onevision/eval/mmbench_cn.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/mmbench_cn.sh" "$@"
