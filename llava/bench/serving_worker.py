"""The vLLM side of `llava.bench.serving`; runs inside the vLLM environment (imports only vLLM and PIL).

    python -m llava.bench.serving_worker JOB.json OUT.json
"""

from __future__ import annotations

import json
import sys
import time


def main(job_path: str, out_path: str) -> None:
    from PIL import Image
    from vllm import LLM, SamplingParams

    job = json.load(open(job_path))
    waves = job["waves"]
    # no prefix or multimodal cache: every question here is new (our HF driver's plain path, without sharing)
    llm = LLM(model=job["model"], dtype=job["dtype"], max_model_len=2048, enforce_eager=True, seed=0,
              limit_mm_per_prompt={"image": 1}, max_num_seqs=max(waves), enable_prefix_caching=False,
              mm_processor_cache_gb=0,
              hf_overrides={"architectures": ["FasterVLMLlavaForConditionalGeneration"],
                            "fastervlm_visual_token_num": job["k"]})
    requests = [{"prompt": job["prompt"], "multi_modal_data": {"image": Image.open(p).convert("RGB")}}
                for p in job["images"]]

    def answer(subset, tokens, wave):
        start = time.perf_counter()
        for i in range(0, len(subset), wave):  # waves of `wave` requests, as our driver's batches
            llm.generate(subset[i:i + wave], SamplingParams(temperature=0.0, max_tokens=tokens), use_tqdm=False)
        return time.perf_counter() - start

    rows = []
    for wave in waves:
        answer(requests[:wave], 1, wave)  # warm-up
        ttft = answer(requests[:wave], 1, wave)
        total = answer(requests, job["new_tokens"], wave)
        rows.append(dict(concurrency=wave, qps=len(requests) / total, ttft_s=ttft))
    json.dump(rows, open(out_path, "w"))


if __name__ == "__main__":  # vLLM spawns worker processes, which re-import this module
    main(*sys.argv[1:3])
