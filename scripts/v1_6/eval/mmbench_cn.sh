#!/bin/bash
# LLaVA-1.6 (NeXT) mmbench_cn: scripts/v1_5/eval/mmbench_cn.sh with the NeXT checkpoint and pruning mode (see next.sh).
#   bash scripts/v1_6/eval/mmbench_cn.sh [K]        ANYRES_MODE=paper bash scripts/v1_6/eval/mmbench_cn.sh 29
source "$(dirname "${BASH_SOURCE[0]}")/next.sh"
exec bash "$V15_EVAL/mmbench_cn.sh" "$@"
