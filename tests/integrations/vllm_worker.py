"""Runs inside the vLLM environment (scripts/make_vllm_env.sh): greedy answers of the FasterVLM plugin.

    python vllm_worker.py MODEL_DIR JOB.json OUT.json

JOB.json: {"k": K or null, "method": name, "prompts": [...], "images": [paths], "max_tokens": n}.
OUT.json: per prompt {"prompt_token_ids": [...], "token_ids": [...]} (vLLM's own token ids).
"""

from __future__ import annotations

import json
import sys


def main(model_dir: str, job_path: str, out_path: str) -> None:
    from PIL import Image
    from vllm import LLM, SamplingParams

    job = json.load(open(job_path))
    overrides = {"architectures": ["FasterVLMLlavaForConditionalGeneration"],
                 "fastervlm_visual_token_num": job["k"], "fastervlm_pruning_method": job["method"]}
    llm = LLM(model=model_dir, hf_overrides=overrides, dtype="float32", max_model_len=2048, enforce_eager=True,
              limit_mm_per_prompt={"image": 1}, seed=0, max_num_seqs=4)
    requests = [{"prompt": p, "multi_modal_data": {"image": Image.open(i).convert("RGB")}}
                for p, i in zip(job["prompts"], job["images"])]
    outputs = llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=job["max_tokens"]))
    json.dump([{"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids)}
               for o in outputs], open(out_path, "w"))


if __name__ == "__main__":  # vLLM spawns worker processes, which re-import this file
    main(*sys.argv[1:4])
