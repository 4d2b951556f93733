"""In-LLM methods (fastv, pdrop, dart) on the tiny LLaVA-NeXT, in both anyres modes.

The image's tokens are its whole spliced block: base view, grid and newline tokens ('faithful'), or the
five views of the fixed 2x2 grid ('paper'), as the official codes take the image's span. Greedy answers
equal each method's key-blocking reference in transformers' own generate (eager); the contract holds:
exact counts per layer, determinism, batch = singles, and no pruning when K covers the block."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.pruning import PruningConfig, get_method, list_methods

from in_llm_helpers import TINY_IDENTITY, TINY_RUN, greedy_with_hooks, hide_keys
from test_dart import KeyBlocking as DARTBlocking, official_kept
from test_pdrop import KeyBlockingPDrop

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
SIZES = [(400, 300), (300, 500)]  # 2x1 and 1x2 grids
IN_LLM = [name for name in list_methods() if get_method(name).stage == "in_llm"]
STEPS = 5


@pytest.fixture(scope="module")
def next_eager(next_path):
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(next_path, device="cpu", attn_implementation="eager")[1]


def inputs(tokenizer, processor, config, mode: str, n: int = 1, questions=("What is in the image?", "Red?")):
    """(input_ids [n, L] left-padded, attention_mask, views, image sizes) for n scene images of SIZES."""
    images = [Image.open(SAMPLES / "scene.png").convert("RGB").resize(size) for size in SIZES[:n]]
    rows = [tokenizer_image_token(build_prompt(q, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX)
            for q in questions[:n]]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, process_images(images, processor, config, mode), [im.size for im in images]


def run_config(name: str, mode: str, k: int = 100) -> PruningConfig:
    if name == "pdrop":  # its schedule is in its args; no budget, or 576 per view in 'paper' mode (the block)
        return PruningConfig(name, 576 if mode == "paper" else None, method_args={"layers": (1, 2, 3),
                             "positions": "keep"}, anyres_mode=mode)
    if name == "fitprune":  # per-layer counts in its args; no budget (a NeXT block's size varies per image)
        return PruningConfig(name, None, method_args=TINY_RUN[name][1], anyres_mode=mode)
    if name in TINY_RUN:  # methods whose default layers do not fit the 4-layer tiny LLM
        return PruningConfig(name, TINY_RUN[name][0], method_args=TINY_RUN[name][1], anyres_mode=mode)
    return PruningConfig(name, k, anyres_mode=mode)


def cover_config(name: str, mode: str, block: int) -> PruningConfig:
    """A run of `name` that must prune nothing on an image block of `block` tokens."""
    if name == "pdrop":
        return PruningConfig(name, method_args={"layers": (1, 2, 3), "ratios": (1.0, 1.0, 1.0)}, anyres_mode=mode)
    if name == "fitprune":
        return PruningConfig(name, None, method_args=TINY_IDENTITY[name][1], anyres_mode=mode)
    return PruningConfig(name, block, method_args=TINY_IDENTITY.get(name, (None, {}))[1], anyres_mode=mode)


class FastVBlocking:
    """FastV's token-mask path: layer L-1's eager row of the last prompt token picks the block's top K."""

    def __init__(self, layers, spans, budget: int, layer: int = 2):
        self.layers, self.spans, self.budget, self.layer = layers, spans, budget, layer
        self.blocked = None

    def _score(self, _module, _inputs, output):
        if self.blocked is not None:
            return
        row = output[1][:, :, -1].mean(dim=1)  # [B, T]
        self.blocked = torch.zeros(row.shape, dtype=torch.bool)
        for b, ((start, end),) in enumerate(self.spans):
            self.blocked[b, start:end] = True
            self.blocked[b, start + torch.topk(row[b, start:end], self.budget).indices] = False

    def _block(self, _module, args, kwargs):
        return args, {**kwargs, "attention_mask": hide_keys(kwargs["attention_mask"], self.blocked)}

    def generate(self, model, mm, steps):
        hooks = [(self.layers[self.layer - 1].self_attn, "post", self._score)]
        return greedy_with_hooks(model, mm, hooks + [(lay, "pre", self._block) for lay in self.layers[self.layer:]],
                                 steps)


@pytest.mark.parametrize("mode", ["faithful", "paper"])
@pytest.mark.parametrize("name", ["fastv", "pdrop", "dart"])
def test_greedy_answers_equal_key_blocking(next_model, next_eager, mode, name):
    tokenizer, model, processor, _ = next_model
    ids, mask, pixels, sizes = inputs(tokenizer, processor, model.config, mode)
    cfg = run_config(name, mode)
    ours = model.generate(ids, images=pixels, image_sizes=sizes, max_new_tokens=STEPS, do_sample=False,
                          pruning=cfg)
    encoded = model.last_multimodal
    block = encoded.token_counts[0]  # every token of the image enters the LLM
    assert block == (5 * 576 if mode == "paper" else 576 + 24 * 32 + 24)  # 2x1 grid, unpadded to 24 x 32 + newlines
    mm = next_eager.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", image_sizes=sizes,
                                              pruning=PruningConfig(anyres_mode=mode))
    (start, end), = mm.image_spans[0]
    assert end - start == block
    layers = next_eager.get_model().layers
    if name == "fastv":
        budget = 100 * 5 if mode == "paper" else 100  # 'paper': K per view
        assert encoded.in_llm["kept_after_layer"] == [budget]
        blocking = FastVBlocking(layers, mm.image_spans, budget)
        ref = blocking.generate(next_eager, mm, STEPS)
        assert encoded.kept_indices[0].tolist() == torch.nonzero(~blocking.blocked[0, start:end]).flatten().tolist()
    elif name == "dart":
        kept = official_kept(next_eager, mm.inputs_embeds, (start, end), 100 * 5 if mode == "paper" else 100)
        assert (start + encoded.kept_indices[0]).tolist() == kept
        blocked = torch.zeros(mm.attention_mask.shape, dtype=torch.bool)
        blocked[0, start:end] = True
        blocked[0, kept] = False
        ref = DARTBlocking(next_eager, blocked).generate(next_eager, mm, STEPS)
    else:
        counts = [int(block * r) for r in (0.5, 0.25, 0.125)]
        assert encoded.in_llm["kept_per_stage"] == [counts]
        blocking = KeyBlockingPDrop(next_eager, mm.image_spans, mm.attention_mask, (0.5, 0.25, 0.125), renumber=False)
        ref = blocking.generate(next_eager, mm, STEPS)
        assert [int(blocking.blocked[i].sum()) for i in (1, 2, 3)] == [block - c for c in counts]
    assert ours.tolist() == ref.tolist()


# every method in 'faithful' mode; 'paper' (2 x 2880 tokens) for fastv, the others' answers are checked above
@pytest.mark.parametrize("name,mode", [(name, "faithful") for name in IN_LLM] + [("fastv", "paper")])
def test_contract_counts_determinism_batch_and_identity(next_model, mode, name):
    from llava.model.llm_loop import LLMLoop

    tokenizer, model, processor, _ = next_model
    ids, mask, pixels, sizes = inputs(tokenizer, processor, model.config, mode, n=2)
    cfg = run_config(name, mode, k=64)
    gen = lambda i, m, p, s, c=cfg: model.generate(i, images=p, image_sizes=s, attention_mask=m,  # noqa: E731
                                                   max_new_tokens=2, do_sample=False, pad_token_id=0, pruning=c)
    first = gen(ids, mask, pixels, sizes)
    kept = [k.tolist() for k in model.last_multimodal.kept_indices]
    blocks = model.last_multimodal.token_counts
    for b in range(2):  # each row alone gives its answer and kept set in the batch (so runs are deterministic)
        single = gen(ids[b][mask[b].bool()][None], None, pixels[b:b + 1], sizes[b:b + 1])
        assert single[0].tolist() == first[b][:single.shape[1]].tolist(), f"row {b}"
        assert model.last_multimodal.kept_indices[0].tolist() == kept[b]
    # the cache per layer: text tokens plus the image tokens each layer sees
    mm = model.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", image_sizes=sizes, pruning=cfg)
    dropper = model.in_llm_pruner(mm, cfg)
    loop = LLMLoop(model.get_model(), model.lm_head, dropper)
    loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
    report = dropper.report()
    stages = list(zip(report.get("layers", [report["layer"]]), zip(*report["kept_per_stage"]) if "kept_per_stage"
                      in report else [report["kept_after_layer"]]))
    width = []
    for i in range(model.config.num_hidden_layers):
        seen = list(blocks)
        for layer, counts in stages:
            if i >= layer:
                seen = list(counts)
        width.append(max(int(mask[b].sum()) - 1 + seen[b] for b in range(2)))
    assert loop.kv_lengths() == width
    assert all(0 < c < n for (_, counts) in stages for c, n in zip(counts, blocks))
    # a budget covering the block prunes nothing: the stock model's answers
    full = PruningConfig(anyres_mode=mode)
    cover = cover_config(name, mode, max(blocks))
    row, alone = ids[:1][:, mask[0].bool()], (None, pixels[:1], sizes[:1])
    assert gen(row, *alone, cover).tolist() == gen(row, *alone, full).tolist()


def test_a_method_that_cannot_run_on_anyres_is_refused(next_model, monkeypatch):
    from llava.pruning.fastv import FastVDropper

    tokenizer, model, processor, _ = next_model
    ids, mask, pixels, sizes = inputs(tokenizer, processor, model.config, "faithful")
    monkeypatch.setattr(FastVDropper, "supports_anyres", False, raising=False)
    with pytest.raises(ValueError, match=r"pruning method 'fastv' cannot run on anyres \(LLaVA-NeXT\) images of .*"
                                         r"llava-v1.6-tiny"):
        model.generate(ids, images=pixels, image_sizes=sizes, max_new_tokens=1, pruning=run_config("fastv", "faithful"))
