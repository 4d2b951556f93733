#!/bin/bash
# LLaVA-1.6 (NeXT) mme: scripts/v1_5/eval/mme.sh with the NeXT checkpoint and pruning mode (see next.sh).
#   bash scripts/v1_6/eval/mme.sh [K]        ANYRES_MODE=paper bash scripts/v1_6/eval/mme.sh 29
source "$(dirname "${BASH_SOURCE[0]}")/next.sh"
exec bash "$V15_EVAL/mme.sh" "$@"
