#!/bin/bash
# LLaVA-1.6 (NeXT) vizwiz: scripts/v1_5/eval/vizwiz.sh with the NeXT checkpoint and pruning mode (see next.sh).
#   bash scripts/v1_6/eval/vizwiz.sh [K]        ANYRES_MODE=paper bash scripts/v1_6/eval/vizwiz.sh 29
source "$(dirname "${BASH_SOURCE[0]}")/next.sh"
exec bash "$V15_EVAL/vizwiz.sh" "$@"
