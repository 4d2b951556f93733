"""The vLLM plugin on the tiny llava-hf model: greedy answers equal our HF path, and `vllm serve` answers a chat.

vLLM pins its own transformers, so it lives in its own environment (`bash scripts/make_vllm_env.sh`,
default `.venv-vllm`, or FASTERVLM_VLLM_PYTHON=/path/to/python); these tests drive it in subprocesses.
Without it they skip, unless FASTERVLM_REQUIRE_VLLM=1 (the CI step) makes that a failure.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from transformers import AutoImageProcessor, AutoTokenizer, LlavaProcessor

from llava.integrations.transformers_native import FasterVLMLlava, FasterVLMLlavaProcessor
from llava.model.hf_layout import publish_llava_hf_layout
from llava.model.tiny import HF_DIR

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "assets" / "samples"
WORKER = Path(__file__).with_name("vllm_worker.py")
PROMPTS = ["USER: <image>\nWhat is in the picture? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:",
           "USER: <image>\nIs there a red square? ASSISTANT:"]
IMAGES = [SAMPLES / "shapes.png", SAMPLES / "stripes.png", SAMPLES / "scene.png"]
CHAT_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'user' %}USER: "
                 "{% for c in m['content'] %}{% if c['type'] == 'image_url' or c['type'] == 'image' %}<image>\n"
                 "{% endif %}{% endfor %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}"
                 "{% endif %}{% endfor %} {% endif %}{% endfor %}ASSISTANT:")


def _vllm_python() -> str | None:
    path = os.environ.get("FASTERVLM_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    # absolute (the subprocesses run in a temp folder), but not resolved: a venv's python is a symlink
    return os.path.abspath(path) if Path(path).is_file() else None


PYTHON = _vllm_python()
if PYTHON is None:
    if os.environ.get("FASTERVLM_REQUIRE_VLLM") == "1":
        raise RuntimeError("FASTERVLM_REQUIRE_VLLM=1 but no vLLM environment: run scripts/make_vllm_env.sh "
                           "or set FASTERVLM_VLLM_PYTHON")
    pytest.skip("no vLLM environment (scripts/make_vllm_env.sh)", allow_module_level=True)

ENV = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
       "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


@pytest.fixture(scope="module")
def served_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny llava-hf checkpoint in the published layout, with a LlavaProcessor whose tokenizer knows <image>."""
    import shutil

    out = tmp_path_factory.mktemp("vllm") / "llava-1.5-tiny-hf"
    shutil.copytree(tiny_dir / HF_DIR, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    LlavaProcessor(image_processor=AutoImageProcessor.from_pretrained(out), tokenizer=tokenizer, patch_size=14,
                   vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(out)
    publish_llava_hf_layout(out)
    return out


def _ours(served_dir: Path, k: int | None, method: str, max_tokens: int) -> list[dict]:
    """Our HF path (FasterVLMLlava, fp32 greedy) on the prompts: prompt ids and new token ids."""
    from PIL import Image

    processor = FasterVLMLlavaProcessor.from_pretrained(served_dir, visual_token_num=k)
    model = FasterVLMLlava.from_pretrained(served_dir, dtype=torch.float32, visual_token_num=k, pruning_method=method)
    out = []
    for prompt, image in zip(PROMPTS, IMAGES):
        batch = processor(images=Image.open(image).convert("RGB"), text=prompt, return_tensors="pt")
        new = model.generate(**batch, max_new_tokens=max_tokens, do_sample=False)[0, batch["input_ids"].shape[1]:]
        out.append({"prompt_token_ids": batch["input_ids"][0].tolist(), "token_ids": new.tolist()})
    return out


# One server (K = 58 by --hf-overrides) and per-request overrides through vLLM's mm_processor_kwargs:
# (the request's kwargs, or None for the server's settings; then the K and method our HF path runs).
REQUESTS = [
    (None, 58, "fastervlm"),
    ({"fastervlm_visual_token_num": None}, None, "fastervlm"),  # every token (K = 576)
    ({"fastervlm_visual_token_num": 29}, 29, "fastervlm"),
    ({"fastervlm_visual_token_num": 29, "fastervlm_pruning_method": "visionzip"}, 29, "visionzip"),
]


def test_vllm_greedy_answers_equal_our_hf_path_per_request_k(served_dir, tmp_path):
    """Greedy answers of one vLLM server equal our HF path at the server's K = 58 and at the K (576, 29) and
    method each request asks for (the same images under every setting, so vLLM's caches must tell them apart)."""
    job = tmp_path / "job.json"
    job.write_text(json.dumps({
        "k": 58, "method": "fastervlm", "max_tokens": 8,
        "prompts": PROMPTS * len(REQUESTS), "images": [str(p) for p in IMAGES] * len(REQUESTS),
        "mm_processor_kwargs": [kw for kw, _, _ in REQUESTS for _ in PROMPTS],
        "bad_mm_processor_kwargs": {"fastervlm_pruning_method": "fastv"}}))
    result = subprocess.run([PYTHON, str(WORKER), str(served_dir), str(job), str(tmp_path / "out.json")],
                            capture_output=True, text=True, timeout=900, env=ENV, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    served = json.loads((tmp_path / "out.json").read_text())
    assert Path(served["llava"]).resolve().is_relative_to(REPO), served["llava"]  # this checkout's plugin
    assert "fastervlm_pruning_method 'fastv' prunes inside the LLM" in (served["error"] or ""), served["error"]
    image_id = 1536
    for row, (_, k, method) in enumerate(REQUESTS):
        expected = _ours(served_dir, k, method, 8)
        for got, want in zip(served["outputs"][row * len(PROMPTS):], expected):
            assert got["prompt_token_ids"].count(image_id) == (576 if k is None else k)
            assert got["prompt_token_ids"] == want["prompt_token_ids"]
            assert got["token_ids"] == want["token_ids"], (k, method)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_serve_answers_chat_requests_with_an_image(served_dir, tmp_path):
    template = tmp_path / "template.jinja"
    template.write_text(CHAT_TEMPLATE)
    port = _free_port()
    overrides = json.dumps({"architectures": ["FasterVLMLlavaForConditionalGeneration"],
                            "fastervlm_visual_token_num": 29})
    # `vllm serve`'s server; vllm-cpu's `vllm` command itself looks up a distribution named "vllm" and stops
    cmd = [PYTHON, "-m", "vllm.entrypoints.openai.api_server", "--model", str(served_dir), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
           "--hf-overrides", overrides, "--chat-template", str(template), "--served-model-name", "tiny",
           "--limit-mm-per-prompt", json.dumps({"image": 1}), "--max-num-seqs", "2",
           "--trust-request-mm-kwargs"]  # the OpenAI server takes a request's mm_processor_kwargs only with it
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 600
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-5000:]
            try:
                with urllib.request.urlopen(base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline, "vllm serve did not become healthy:\n" + \
                (tmp_path / "serve.log").read_text()[-5000:]
            time.sleep(2)
        image = base64.b64encode(IMAGES[0].read_bytes()).decode()
        body = {"model": "tiny", "max_tokens": 6, "temperature": 0,
                "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image}"}},
                    {"type": "text", "text": "What is in the picture?"}]}]}

        def chat(extra: dict) -> dict:
            request = urllib.request.Request(base + "/v1/chat/completions", data=json.dumps({**body, **extra}).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=300) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as err:  # the server's reason, in the failure
                raise AssertionError(f"HTTP {err.code}: {err.read()[:2000]!r}") from None

        reply = chat({})
        assert isinstance(reply["choices"][0]["message"]["content"], str)
        assert reply["usage"]["completion_tokens"] >= 1
        # vLLM tokenizes a rendered chat without special tokens (the template would hold them)
        rendered = AutoTokenizer.from_pretrained(served_dir)("USER: <image>\nWhat is in the picture? ASSISTANT:",
                                                             add_special_tokens=False)["input_ids"]
        assert reply["usage"]["prompt_tokens"] == len(rendered) - 1 + 29  # the image entered as its 29 kept tokens
        # a request's own K, through the OpenAI API's mm_processor_kwargs
        reply = chat({"mm_processor_kwargs": {"fastervlm_visual_token_num": 100}})
        assert reply["usage"]["prompt_tokens"] == len(rendered) - 1 + 100
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
