"""Runs inside the vLLM environment (scripts/make_vllm_env.sh): greedy answers of the FasterVLM plugin.

    python vllm_worker.py MODEL_DIR JOB.json OUT.json

JOB.json: {"k": K or null, "method": name, "prompts": [...], "images": [paths], "max_tokens": n} and optionally
"mm_processor_kwargs": [per prompt: a dict or null] (per-request pruning: fastervlm_visual_token_num, ...) and
"bad_mm_processor_kwargs": a dict to send with the first prompt once more, expecting a refusal.
OUT.json: {"llava": the plugin's llava/__init__.py, "error": that refusal's message or null, "outputs": [...]}.
Each output: per prompt {"prompt_token_ids": [...], "token_ids": [...]} (vLLM's own token ids).
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
    per_request = job.get("mm_processor_kwargs") or [None] * len(job["prompts"])
    requests = [{"prompt": p, "multi_modal_data": {"image": Image.open(i).convert("RGB")},
                 **({"mm_processor_kwargs": kw} if kw is not None else {})}
                for p, i, kw in zip(job["prompts"], job["images"], per_request)]
    outputs = llm.generate(requests, SamplingParams(temperature=0.0, max_tokens=job["max_tokens"]))
    error = None
    if job.get("bad_mm_processor_kwargs"):  # a request whose pruning kwargs are refused, by name
        try:
            llm.generate([{**requests[0], "mm_processor_kwargs": job["bad_mm_processor_kwargs"]}],
                         SamplingParams(temperature=0.0, max_tokens=1))
        except Exception as err:  # noqa: BLE001 - the message is what the test checks
            error = f"{type(err).__name__}: {err}" + "".join(f" <- {c}" for c in _causes(err))
    import llava

    json.dump({"llava": llava.__file__, "error": error,
               "outputs": [{"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids)}
                           for o in outputs]}, open(out_path, "w"))


def _causes(err: BaseException) -> list[str]:
    out = []
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
        out.append(f"{type(err).__name__}: {err}")
    return out


if __name__ == "__main__":  # vLLM spawns worker processes, which re-import this file
    main(*sys.argv[1:4])
