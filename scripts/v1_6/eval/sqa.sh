#!/bin/bash
# LLaVA-1.6 (NeXT) sqa: scripts/v1_5/eval/sqa.sh with the NeXT checkpoint and pruning mode (see next.sh).
#   bash scripts/v1_6/eval/sqa.sh [K]        ANYRES_MODE=paper bash scripts/v1_6/eval/sqa.sh 29
source "$(dirname "${BASH_SOURCE[0]}")/next.sh"
exec bash "$V15_EVAL/sqa.sh" "$@"
