"""Shared pieces of the in-LLM method tests: left-padded prompts and FastV-style key blocking."""

from __future__ import annotations

import torch

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import tokenizer_image_token


def left_padded(tokenizer, questions) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [B, L], attention_mask [B, L]) of LLaVA-1.5 prompts with one image each, left-padded."""
    rows = [tokenizer_image_token(build_prompt(q, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX)
            for q in questions]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def hide_keys(mask: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """An eager layer's additive mask [B, 1, Q, KV] with the prefill keys in `blocked` [B, T] hidden.

    Keys past the prefill (the decoded tokens) stay visible.
    """
    extra = torch.zeros(mask.shape[0], mask.shape[-1] - blocked.shape[1], dtype=torch.bool)
    block = torch.cat([blocked, extra], dim=1)[:, None, None, :]
    return mask.masked_fill(block, torch.finfo(mask.dtype).min)


def answer_metadata(tiny_path: str, tmp_path, method: str, k: int, pruning_args: str) -> dict:
    """Answer one sample question with `model_vqa_loader` (3 greedy tokens) and return its metadata."""
    import json
    from pathlib import Path

    from llava.eval.model_vqa_loader import main

    samples = Path(__file__).resolve().parents[2] / "assets" / "samples"
    q = Path(tmp_path) / "q.jsonl"
    q.write_text(json.dumps({"question_id": 1, "image": "shapes.png", "text": "What?"}) + "\n")
    answers = Path(tmp_path) / "a.jsonl"
    main(["--model-path", tiny_path, "--question-file", str(q), "--image-folder", str(samples),
          "--answers-file", str(answers), "--temperature", "0", "--max_new_tokens", "3", "--device", "cpu",
          "--visual-token-num", str(k), "--pruning-method", method, "--pruning-args", pruning_args])
    return json.loads(answers.read_text())["metadata"]


def greedy_with_hooks(model, mm, hooks, max_new_tokens: int) -> torch.Tensor:
    """Greedy `generate` of transformers on the spliced inputs `mm`, with `hooks` installed meanwhile.

    hooks: (module, kind, fn) with kind "pre" (a forward pre-hook taking kwargs) or "post" (a forward hook).
    """
    handles = [module.register_forward_pre_hook(fn, with_kwargs=True) if kind == "pre"
               else module.register_forward_hook(fn) for module, kind, fn in hooks]
    try:
        return model.generate(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask,
                              max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=0)
    finally:
        for h in handles:
            h.remove()


def loop_greedy(model, mm, dropper, steps: int):
    """The LLM loop's prefill and `steps` greedy decode steps -> (loop, logits per step, tokens fed)."""
    from llava.model.llm_loop import LLMLoop

    loop = LLMLoop(model.get_model(), model.lm_head, dropper)
    logits = [loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)]
    tokens = []
    for _ in range(steps):
        tokens.append(logits[-1].argmax(-1))
        logits.append(loop.step(model.get_model().embed_tokens(tokens[-1])[:, None]))
    return loop, logits, tokens


# A method's budget and args for a pruning run on the 4-layer tiny LLM, where its defaults do not fit;
# pdrop and fitprune take their schedules from their args and their budget is the image's 576 tokens;
# sparsevlm's layers (tokens leave after 0 and 2) need their keep counts.
TINY_RUN = {"pdrop": (576, {"layers": (1, 2, 3)}), "fitprune": (576, {"removed": (100, 50, 25, 0)}),
            "sparsevlm": (64, {"layers": (0, 2), "keep": (66, 30)})}
# ... and for a run that must prune nothing (default: K >= N).
TINY_IDENTITY = {"pdrop": (576, {"layers": (1, 2, 3), "ratios": (1.0, 1.0, 1.0)}),
                 "fitprune": (576, {"removed": (0, 0, 0, 0)}),
                 "sparsevlm": (576, {"layers": (0, 2), "keep": (66, 30)})}
