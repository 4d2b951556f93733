#!/bin/bash
# Attention dispersion (FasterVLM paper): how concentrated the last prompt token's attention over the image
# is at one LLM layer (default 2) vs CLIP's [CLS] attention, over the 1K LLaVA-665K subset.
#   bash scripts/analyze_attn_dispersion.sh [extra flags, e.g. --layer 2]
# Environment overrides:
#   CKPT          model path or id                     (liuhaotian/llava-v1.5-7b)
#   DATA_FILE     LLaVA instruction jsonl              (./playground/data/analysis/llava_v1_5_mix1k.jsonl)
#   IMAGE_FOLDER  root the records' image paths use    (./playground/data)
#   NUM_SAMPLES   first N records (-1 = all)           (1000)
#   OUT           output folder                        (./outputs/analysis/attn_dispersion)
#   LAYER         LLM layer                            (2)
#   CONV_MODE, DEVICE, DTYPE, BATCH_SIZE, PYTHON       (vicuna_v1, auto, auto, 1, python)
# Outputs and how to read them: docs/ANALYSIS.md. Redraw without the model:
#   python -m llava.analysis.attn_dispersion --replot "$OUT/attn_dispersion_stats.json"
set -euo pipefail
CKPT="${CKPT:-liuhaotian/llava-v1.5-7b}"
DATA_FILE="${DATA_FILE:-./playground/data/analysis/llava_v1_5_mix1k.jsonl}"
IMAGE_FOLDER="${IMAGE_FOLDER:-./playground/data}"
NUM_SAMPLES="${NUM_SAMPLES:-1000}"
OUT="${OUT:-./outputs/analysis/attn_dispersion}"
if [[ ! -f "$DATA_FILE" ]]; then
    echo "error: DATA_FILE $DATA_FILE not found. The 1K analysis subset llava_v1_5_mix1k.jsonl is in FasterVLM's" >&2
    echo "  repository (github.com/Theia-4869/FasterVLM, playground/data/analysis/llava_v1_5_mix1k.jsonl); put it at" >&2
    echo "  ./playground/data/analysis/ or set DATA_FILE, with its images (coco, gqa, ocr_vqa, textvqa, vg) under IMAGE_FOLDER" >&2
    copy="${FASTERVLM_REFERENCE:-$(cd "$(dirname "$0")/.." && pwd)/../shared/reference}/analysis/llava_v1_5_mix1k.jsonl"
    [[ -f "$copy" ]] && echo "  A copy is in the reference data: DATA_FILE=$copy" >&2
    exit 2
fi
"${PYTHON:-python}" -m llava.analysis.attn_dispersion \
    --model-path "$CKPT" --data-file "$DATA_FILE" --image-folder "$IMAGE_FOLDER" \
    --num-samples "$NUM_SAMPLES" --output-dir "$OUT" --conv-mode "${CONV_MODE:-vicuna_v1}" \
    --device "${DEVICE:-auto}" --torch-dtype "${DTYPE:-auto}" --batch-size "${BATCH_SIZE:-1}" \
    --layer "${LAYER:-2}" "$@"
