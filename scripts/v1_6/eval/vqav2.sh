#!/bin/bash
# LLaVA-1.6 (NeXT) vqav2: scripts/v1_5/eval/vqav2.sh with the NeXT checkpoint and pruning mode (see next.sh).
#   bash scripts/v1_6/eval/vqav2.sh [K]        ANYRES_MODE=paper bash scripts/v1_6/eval/vqav2.sh 29
source "$(dirname "${BASH_SOURCE[0]}")/next.sh"
exec bash "$V15_EVAL/vqav2.sh" "$@"
