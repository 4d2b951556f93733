#!/usr/bin/env bash
# One-command setup and main job, offline, on the embedded tiny model and the bundled samples:
#   1. installs torch (CPU 2.13.0 unless a torch is already there), the package and the test reference;
#   2. writes the tiny random-weight LLaVA-1.5 checkpoint to playground/tiny/;
#   3. answers the sample questions at K=576 (no pruning) and K=58 (90% pruned) with model_vqa_loader;
#   4. prints the answers and draws the kept patches for several K into outputs/quickstart/;
#   video: writes the tiny Video-LLaVA (8 frames x 256 patches) and three generated moving-shape videos,
#      answers one video question unpruned (8 x 257 = 2056 video tokens) and at K=26 per frame (8 x 26 = 208)
#      with model_video_qa, and draws that question's kept patches per frame as a strip.
#   then the tiny LLaVA-OneVision, Qwen2.5-VL and Qwen3-VL answer one question each (all tokens and K=64).
# Random weights give meaningless text; the same commands with a real checkpoint do the real job.
set -euo pipefail
export PIP_ROOT_USER_ACTION=ignore  # pip run as root (containers) need not warn on every install
cd "$(dirname "$0")/.."
out=outputs/quickstart
mkdir -p "$out"
step() { printf '\n[%s/4] %s\n' "$1" "$2"; }

step 1 "installing torch, this package (with its test extras) and the reference implementation"
if python -c "import torch" 2>/dev/null; then
    echo "  torch $(python -c 'import torch; print(torch.__version__)') is already installed; keeping it"
else
    echo "  installing torch 2.13.0 (CPU wheel)"
    python -m pip install --quiet -c constraints.txt torch==2.13.0
fi
echo "  installing this package at the tested versions: pip install -c constraints.txt -e .[test]"
# the constraints less their torch pin, so that a torch already there stays
python -m pip install --quiet -c <(grep -v '^torch==' constraints.txt) -e ".[test]"
echo "  installing the original LLaVA (llava-torch 1.2.2 on transformers 4.37.2) into .oracle/ (log: $out/install_oracle.log)"
oracle_ok=0
if bash scripts/install_oracle.sh .oracle >"$out/install_oracle.log" 2>&1; then
    # Import it the way the tests do: from another folder, the oracle first on PYTHONPATH.
    oracle="$(pwd)/.oracle"
    if (cd "${TMPDIR:-/tmp}" && PYTHONPATH="$oracle" python -c \
            "import transformers, llava.model.builder; assert transformers.__version__ == '4.37.2'") \
            >>"$out/install_oracle.log" 2>&1; then
        oracle_ok=1
    fi
fi
if (( oracle_ok )); then
    echo "  reference implementation: installed in .oracle/; the tests that compare with the original LLaVA will run"
else
    echo "  reference implementation: NOT installed (see $out/install_oracle.log); the tests that compare with"
    echo "  the original LLaVA will skip. Retry with: bash scripts/install_oracle.sh .oracle"
fi

step 2 "writing the tiny random-weight LLaVA-1.5 checkpoint to playground/tiny/"
python -m llava.model.tiny --out playground/tiny

step 3 "answering the 3 sample questions (playground/data/sample/questions.jsonl) at K=576 and K=58"
for k in 576 58; do
  python -m llava.eval.model_vqa_loader \
      --model-path playground/tiny/llava-v1.5-tiny \
      --question-file playground/data/sample/questions.jsonl \
      --image-folder assets/samples \
      --answers-file "$out/answers_k$k.jsonl" --no-resume \
      --conv-mode vicuna_v1 --temperature 0 --max_new_tokens 16 \
      --visual-token-num "$k" --batch-size 3
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("answers_k*.jsonl")):
    for line in path.read_text().splitlines():
        a = json.loads(line)
        print(f"[{path.stem}] q{a['question_id']} ({a['metadata']['visual_tokens']} visual tokens) "
              f"{a['prompt'][:40]!r} -> {a['text']!r}")
PY

step 4 "drawing the kept patches of fastervlm and uniform at K=576,144,58,29"
python -m llava.kept_map --model-path playground/tiny/llava-v1.5-tiny --image-file assets/samples/shapes.png \
    --visual-token-num 576,144,58,29 --pruning-method fastervlm,uniform --out "$out/kept_patches.png"

# ---- video: one question on the tiny Video-LLaVA, unpruned and at K=26 per frame -------------------
printf '\n[video] %s\n' "tiny Video-LLaVA and generated sample videos: one question unpruned and at K=26 per frame"
python -m llava.model.family_video_llava --out playground/tiny
python -m llava.video_samples --out "$out/video_samples"
video_model=playground/tiny/video-llava-tiny-hf
for k in full 26; do
  budget=(); [[ $k == full ]] || budget=(--visual-token-num "$k")
  python -m llava.eval.model_video_qa \
      --model-path "$video_model" \
      --question-file "$out/video_samples/test_q.json" --gt-answers-file "$out/video_samples/test_a.json" \
      --video-folder "$out/video_samples/videos" --num-samples 1 \
      --answers-file "$out/video_answers_$k.jsonl" --no-resume \
      --conv-mode llava_v1 --temperature 0 --max_new_tokens 16 "${budget[@]}"
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
for name in ("full", "26"):
    for line in (Path(sys.argv[1]) / f"video_answers_{name}.jsonl").read_text().splitlines():
        a, m = json.loads(line), json.loads(line)["metadata"]
        per_frame = m["visual_tokens_per_frame"] or "all + [CLS]"
        print(f"[video K={per_frame}] {a['video']} ({m['num_frames']} frames, {m['visual_tokens']} video tokens) "
              f"{a['prompt']!r} -> {a['text']!r} (truth: {a['answer']!r})")
PY
python -m llava.kept_map --model-path "$video_model" --video-file "$out/video_samples/videos/red_square_right.mp4" \
    --visual-token-num 26 --pruning-method fastervlm --out "$out/kept_frames.png"

# ---- the processor families: LLaVA-OneVision, Qwen2.5-VL, Qwen3-VL (self-contained) ----------------
# Each tiny checkpoint is written with transformers' own classes and save_pretrained (random weights,
# real geometry), then answers one sample question with model_vqa_loader: no --conv-mode (the
# checkpoint's chat template), once with no budget and once at K=64 (at most 64 visual tokens per image).
printf '\n[families] tiny LLaVA-OneVision, Qwen2.5-VL and Qwen3-VL: one sample question each, all tokens and K=64\n'
python - "$out/families" <<'PY'
import json, sys
from pathlib import Path

from llava.eval.model_vqa_loader import main as answer
from llava.model.family_onevision import save_tiny_onevision
from llava.model.family_qwen2_5_vl import save_tiny_qwen2_5_vl
from llava.model.family_qwen3_vl import save_tiny_qwen3_vl

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
question = out / "question.jsonl"
question.write_text(Path("playground/data/sample/questions.jsonl").read_text().splitlines()[0] + "\n")
builders = {"llava-onevision": lambda d: save_tiny_onevision(d / "llava-onevision-tiny", vision_aspect_ratio="anyres_max_2"),
            "qwen2_5_vl": lambda d: save_tiny_qwen2_5_vl(d / "qwen2_5_vl-tiny"),
            "qwen3_vl": lambda d: save_tiny_qwen3_vl(d / "qwen3_vl-tiny")}
for family, build in builders.items():
    folder = build(Path("playground/tiny"))
    for budget in ([], ["--visual-token-num", "64"]):
        answers = out / f"{family}_{'k64' if budget else 'all'}.jsonl"
        answer(["--model-path", str(folder), "--question-file", str(question), "--image-folder", "assets/samples",
                "--answers-file", str(answers), "--no-resume", "--temperature", "0", "--max_new_tokens", "8",
                "--device", "cpu", *budget])
        a = json.loads(answers.read_text().splitlines()[0])
        m = a["metadata"]
        print(f"[{family} {'K=64' if budget else 'all tokens'}] q{a['question_id']}: {m['visual_tokens']} of "
              f"{m['visual_tokens_unpruned']} visual tokens -> {a['text']!r}")
PY
echo
echo "done: answers, kept_patches.png, the video answers, kept_frames.png and families/ in $out (random weights: the text is meaningless by design)"
echo "next: python -m llava.eval.make_mini_data --out playground/data/eval   (a mini data root for the eval scripts)"
