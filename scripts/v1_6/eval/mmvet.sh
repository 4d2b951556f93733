#!/bin/bash
# LLaVA-1.6 (NeXT) mmvet: scripts/v1_5/eval/mmvet.sh with the NeXT checkpoint and pruning mode (see next.sh).
#   bash scripts/v1_6/eval/mmvet.sh [K]        ANYRES_MODE=paper bash scripts/v1_6/eval/mmvet.sh 29
source "$(dirname "${BASH_SOURCE[0]}")/next.sh"
exec bash "$V15_EVAL/mmvet.sh" "$@"
