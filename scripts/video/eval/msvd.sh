#!/bin/bash
# MSVD-QA with Video-LLaVA: answer (llava.eval.model_video_qa), judge (llava.eval.eval_video_qa, GPT-3.5 yes/no + 0-5),
# and write the score record for `python -m llava.eval.summarize RESULTS --video`.
#   bash scripts/video/eval/msvd.sh [K|full]     K = tokens per frame (environment overrides: see common.sh)
set -euo pipefail
BENCH=msvd
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
run_video_qa
