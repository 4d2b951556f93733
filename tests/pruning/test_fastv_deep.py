"""FastV on a 32-layer LLM (LLaVA-1.5-7B's depth, tiny width) at every budget of FasterVLM's table
scaled to the image: it runs, each layer from L on caches only the kept tokens, and its greedy answers
equal FastV's key-blocking formulation in transformers' own generate."""

from __future__ import annotations

import pytest
import torch

from llava.mm_utils import process_images
from llava.pruning import PruningConfig

from in_llm_helpers import greedy_with_hooks, hide_keys, left_padded

DEPTH = 32
LAYER = 2
N = 576
QUESTIONS = ("What shapes are there?", "Describe the picture in detail please.")


@pytest.fixture(scope="module")
def deep_path(tiny_dir, tmp_path_factory) -> str:
    """An original-layout LLaVA-1.5 checkpoint with a 32-layer, 64-wide LLM and the tiny CLIP tower."""
    from transformers import CLIPVisionModel

    from llava.model.family_llava import save_original
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
    from llava.model.tiny import CLIP_DIR, mark_random_weights, tiny_config
    from llava.model.tokenizer import load_tokenizer, save_tiny_tokenizer

    out = tmp_path_factory.mktemp("deep") / "llava-v1.5-deep"
    out.mkdir()
    save_tiny_tokenizer(out)
    config = tiny_config(len(load_tokenizer(str(out))), str(tiny_dir / CLIP_DIR))
    config.num_hidden_layers, config.hidden_size, config.intermediate_size = DEPTH, 64, 128
    torch.manual_seed(3)
    model = LlavaLlamaForCausalLM(config)
    model.attach_vision_tower(CLIPVisionTower(CLIPVisionModel.from_pretrained(str(tiny_dir / CLIP_DIR)),
                                              name=CLIP_DIR))
    with torch.no_grad():
        for layer in model.mm_projector.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, config.initializer_range)
                layer.bias.zero_()
    save_original(model.eval(), out)
    return str(mark_random_weights(out))


@pytest.fixture(scope="module")
def deep(deep_path):
    from llava.model.builder import load_pretrained_model

    sdpa = load_pretrained_model(deep_path, device="cpu", torch_dtype="float32")
    eager = load_pretrained_model(deep_path, device="cpu", torch_dtype="float32", attn_implementation="eager")[1]
    return sdpa, eager


class KeyBlocking:
    """FastV's token-mask path: layer L-1's eager attention row of the last prompt token picks the K image
    tokens; the others are hidden as keys from layer L on, in the prefill and every decode step."""

    def __init__(self, layers, spans, budget: int):
        self.layers, self.spans, self.budget = layers, spans, budget
        self.blocked: torch.Tensor | None = None  # [B, T_prefill]

    def _score(self, _module, _inputs, output):
        if self.blocked is not None:
            return
        row = output[1][:, :, -1].mean(dim=1)  # eager weights [B, H, T, T] -> [B, T]
        blocked = torch.zeros(row.shape, dtype=torch.bool)
        for b, ((start, end),) in enumerate(self.spans):
            blocked[b, start:end] = True
            blocked[b, start + torch.topk(row[b, start:end], self.budget).indices] = False
        self.blocked = blocked

    def _block(self, _module, args, kwargs):
        return args, {**kwargs, "attention_mask": hide_keys(kwargs["attention_mask"], self.blocked)}

    def hooks(self):
        return [(self.layers[LAYER - 1].self_attn, "post", self._score)] + \
            [(lay, "pre", self._block) for lay in self.layers[LAYER:]]


@pytest.mark.parametrize("k", [575, 144, 58, 29])
def test_fastv_on_32_layers_equals_key_blocking(deep, sample_images, k):
    (tokenizer, model, processor, _), eager = deep
    assert model.config.num_hidden_layers == DEPTH
    ids, mask = left_padded(tokenizer, QUESTIONS)
    pixels = process_images(sample_images[:2], processor, model.config)
    cfg = PruningConfig("fastv", k, method_args={"layer": LAYER})
    ours = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=4, do_sample=False,
                          pad_token_id=0, pruning=cfg)
    report = model.last_multimodal.in_llm
    assert report["kept_after_layer"] == [k, k]
    assert report["layer_averaged"] == [pytest.approx((LAYER * N + (DEPTH - LAYER) * k) / DEPTH)] * 2

    mm = eager.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=PruningConfig())
    blocking = KeyBlocking(eager.get_model().layers, mm.image_spans, k)
    ref = greedy_with_hooks(eager, mm, blocking.hooks(), 4)
    assert int(blocking.blocked.sum()) == 2 * (N - k)
    assert ours.tolist() == ref.tolist()


def test_fastv_on_32_layers_caches_the_kept_tokens_only(deep, sample_images):
    from llava.model.llm_loop import LLMLoop

    (tokenizer, model, processor, _), _ = deep
    ids, mask = left_padded(tokenizer, QUESTIONS[:1])
    pixels = process_images(sample_images[:1], processor, model.config)
    cfg = PruningConfig("fastv", 58, method_args={"layer": LAYER})
    mm = model.prepare_multimodal_inputs(ids, pixels, mask, padding_side="left", pruning=cfg)
    loop = LLMLoop(model.get_model(), model.lm_head, model.in_llm_pruner(mm, cfg))
    loop.prefill(mm.inputs_embeds, mm.attention_mask, mm.position_ids)
    t = mm.inputs_embeds.shape[1]
    assert loop.kv_lengths() == [t] * LAYER + [t - (N - 58)] * (DEPTH - LAYER)
