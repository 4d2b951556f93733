#!/bin/bash
# Qwen3-VL textvqa: scripts/v1_5/eval/textvqa.sh with the family's checkpoint and chat template.   bash scripts/qwen3_vl/eval/textvqa.sh K
source "$(dirname "${BASH_SOURCE[0]}")/settings.sh"
exec bash "$V15_EVAL/textvqa.sh" "$@"
