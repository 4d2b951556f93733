"""Models and inputs for the benchmark: LLaVA-1.5 shapes with random weights, real checkpoints, prompts.

`build_random_model("llava-v1.5-7b", llm_layers=8, dtype=torch.bfloat16)` builds the real 7B shape
(Vicuna-7B widths, CLIP ViT-L/14-336 tower, mlp2x_gelu projector) with random weights and no
download. Parameters are created on the meta device and then filled once with uniform noise of
std 0.02 (norm weights 1, biases 0): a normal init of several GB would cost more than the runs.
As after `from_pretrained`, LLM and projector parameters keep requires_grad=True and the CLIP tower's
are frozen by CLIPVisionTower; the benchmark runs under inference_mode, so this costs nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.language_model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.tiny import CLIP_PREPROCESSOR, TINY_TEXT, TINY_VISION

# OpenAI CLIP ViT-L/14-336, the tower of every LLaVA-1.5 checkpoint.
CLIP_L_336 = dict(
    image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
    num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)
_VICUNA = dict(vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2,
               pad_token_id=0, tie_word_embeddings=False)
ARCHS: dict[str, dict] = {
    "tiny": dict(text=dict(TINY_TEXT), vision=dict(TINY_VISION)),
    "llava-v1.5-7b": dict(
        text=dict(_VICUNA, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32),
        vision=CLIP_L_336,
    ),
    "llava-v1.5-13b": dict(
        text=dict(_VICUNA, hidden_size=5120, intermediate_size=13824, num_hidden_layers=40,
                  num_attention_heads=40, num_key_value_heads=40),
        vision=CLIP_L_336,
    ),
}

# Eight short VQA-style questions; images cycle over the bundled samples.
QUESTIONS = [
    "What shapes are in the image?",
    "What does the text say? Answer the question using a single word or phrase.",
    "Is there a house in the image? Answer the question using a single word or phrase.",
    "Describe the image in one sentence.",
    "What colour is the largest object?",
    "How many objects are there in the image? Answer with a number.",
    "Is the picture taken indoors or outdoors?",
    "What is in the top left corner of the image?",
]
SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"


def llava_config(arch: str, llm_layers: int | None = None, vocab_size: int | None = None) -> LlavaLlamaConfig:
    """The original-layout config of `arch` (LLaVA-1.5 multimodal settings), optionally with fewer LLM layers."""
    if arch not in ARCHS:
        raise ValueError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")
    text = dict(ARCHS[arch]["text"])
    if vocab_size is not None:
        text["vocab_size"] = vocab_size
    if llm_layers is not None:
        if llm_layers < 1:
            raise ValueError(f"--llm-layers must be >= 1, got {llm_layers}")
        text["num_hidden_layers"] = llm_layers
    text.setdefault("initializer_range", 0.02)
    return LlavaLlamaConfig(
        mm_vision_tower=f"random-{arch}-clip", mm_hidden_size=ARCHS[arch]["vision"]["hidden_size"],
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_projector_type="mlp2x_gelu",
        image_aspect_ratio="pad", mm_patch_merge_type="flat", tokenizer_model_max_length=2048,
        tokenizer_padding_side="right", max_sequence_length=2048, architectures=["LlavaLlamaForCausalLM"],
        **text,
    )


@torch.no_grad()
def _materialize(module: nn.Module, dtype: torch.dtype, device: str, std: float, generator: torch.Generator) -> None:
    """Replace meta parameters by real ones: norms 1/0, biases 0, everything else U(-a, a) of std `std`."""
    bound = std * 3**0.5
    for sub in module.modules():
        is_norm = isinstance(sub, nn.LayerNorm) or "RMSNorm" in type(sub).__name__
        for name, param in list(sub.named_parameters(recurse=False)):
            if not param.is_meta:
                continue
            data = torch.empty(param.shape, dtype=dtype, device=device)
            if is_norm and name == "weight":
                data.fill_(1.0)
            elif name == "bias":
                data.zero_()
            else:
                data.uniform_(-bound, bound, generator=generator)
            # requires_grad stays True as from_pretrained leaves it: with frozen weights, at::matmul does
            # not fold the LM head's [B, 1, H] input and copies the transposed 32000 x H weight per call.
            setattr(sub, name, nn.Parameter(data))


def build_random_model(
    arch: str, llm_layers: int | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu",
    seed: int = 0, vocab_size: int | None = None,
) -> LlavaLlamaForCausalLM:
    """LLaVA-1.5 of shape `arch` with random weights (eval mode, tower attached, no download)."""
    from accelerate import init_empty_weights

    config = llava_config(arch, llm_layers, vocab_size)
    vision = CLIPVisionConfig(**ARCHS[arch]["vision"])
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers (rotary, positions) real
        model = LlavaLlamaForCausalLM(config)
        clip = CLIPVisionModel(vision)
    generator = torch.Generator(device=device).manual_seed(seed)
    _materialize(model, dtype, device, config.initializer_range, generator)
    _materialize(clip, dtype, device, 0.02, generator)
    model.to(device)
    model.attach_vision_tower(CLIPVisionTower(clip.to(device), name=f"random-{arch}-clip"))
    model.set_pruning(None)
    return model.eval()


def with_llm_layers(model: LlavaLlamaForCausalLM, layers: int) -> LlavaLlamaForCausalLM:
    """A model that shares every weight of `model` but runs only its first `layers` LLM layers."""
    from accelerate import init_empty_weights

    have = len(model.get_model().layers)
    if not 1 <= layers <= have:
        raise ValueError(f"cannot keep {layers} LLM layers of a model with {have}")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    if getattr(config, "layer_types", None):
        config.layer_types = config.layer_types[:layers]
    with init_empty_weights(include_buffers=False):
        view = LlavaLlamaForCausalLM(config)
    src, dst = model.get_model(), view.get_model()
    for name in ("embed_tokens", "norm", "rotary_emb"):
        setattr(dst, name, getattr(src, name))
    dst.layers = nn.ModuleList(list(src.layers[:layers]))
    view.llm.set_output_embeddings(model.lm_head)
    view.mm_projector, view.vision_tower, view.image_newline = model.mm_projector, model.vision_tower, model.image_newline
    view.pruning = model.pruning
    return view.eval()


def load_model(model_path: str, dtype: str, device: str, vision_tower: str | None = None, llm_layers: int | None = None):
    """A real checkpoint through `load_pretrained_model`; returns (tokenizer, model, image_processor)."""
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(
        model_path, None, Path(model_path).name, device=device, torch_dtype=dtype, vision_tower_path=vision_tower,
    )
    if llm_layers is not None:
        model = with_llm_layers(model, llm_layers)
    return tokenizer, model, processor


def random_image_processor():
    """OpenAI CLIP-336 preprocessing (the values LLaVA-1.5 uses), built without files."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil(**{k: v for k, v in CLIP_PREPROCESSOR.items() if k != "image_processor_type"})


def tiny_tokenizer():
    """The embedded tiny sentencepiece tokenizer (its ids are valid in any LLaMA-sized vocabulary)."""
    import tempfile

    from llava.model.tokenizer import load_tokenizer, save_tiny_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_tokenizer(tmp)
        return load_tokenizer(tmp)


def sample_images(n: int) -> list:
    """`n` PIL images: the bundled samples in turn, or generated gradients if they are not installed."""
    from PIL import Image

    files = sorted(SAMPLES.glob("*.png")) if SAMPLES.is_dir() else []
    if files:
        from llava.image_io import load_image

        pool = [load_image(f) for f in files]
    else:
        pool = [Image.linear_gradient("L").convert("RGB").resize((400, 300 + 40 * i)) for i in range(3)]
    return [pool[i % len(pool)] for i in range(n)]


@dataclass
class BenchBatch:
    """B prompts with one image each: input_ids [B, L] (right-padded), attention_mask [B, L], images [B, 3, S, S]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    images: torch.Tensor
    questions: list[str]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def row(self, i: int) -> "BenchBatch":
        """Question i alone, without the padding of the batch."""
        n = int(self.attention_mask[i].sum())
        return BenchBatch(self.input_ids[i : i + 1, :n], self.attention_mask[i : i + 1, :n],
                          self.images[i : i + 1], [self.questions[i]])


def make_batch(tokenizer, image_processor, model_config, batch: int, device: str, dtype: torch.dtype,
               conv_mode: str = "vicuna_v1", first: int = 0) -> BenchBatch:
    """Questions first..first+batch-1 (cycling over QUESTIONS) in LLaVA's prompt, with their images."""
    from llava.eval.runner import build_prompt
    from llava.mm_utils import process_images, tokenizer_image_token

    questions = [QUESTIONS[(first + i) % len(QUESTIONS)] for i in range(batch)]
    rows = [tokenizer_image_token(build_prompt(q, conv_mode, True), tokenizer, IMAGE_TOKEN_INDEX) for q in questions]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    pixels = process_images(sample_images(first + batch)[first:], image_processor, model_config)
    return BenchBatch(ids.to(device), mask.to(device), pixels.to(device=device, dtype=dtype), questions)


# ---- processor families at real dimensions ---------------------------------------------------------
def onevision_raw_config(arch, image_token_index: int | None = None) -> dict:
    """A llava-hf OneVision config.json (as a dict) of the `llava.bench.family_flops` preset `arch`."""
    from .family_flops import get_family_arch

    arch = get_family_arch(arch) if isinstance(arch, str) else arch
    if arch.family != "llava-onevision":
        raise ValueError(f"--arch {arch.name} is a {arch.family} preset; the benchmark builds random weights only "
                         "for LLaVA-OneVision so far (its FLOPs come from llava.bench.family_flops)")
    t, llm = arch.tower, arch.llm
    text = dict(model_type="qwen2", hidden_size=llm.hidden, intermediate_size=llm.intermediate,
                num_hidden_layers=llm.layers, num_attention_heads=llm.heads, num_key_value_heads=llm.kv_heads,
                vocab_size=llm.vocab, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=False,
                initializer_range=0.02)
    vision = dict(model_type="siglip_vision_model", hidden_size=t.hidden, intermediate_size=t.intermediate,
                  num_hidden_layers=t.layers, num_attention_heads=t.heads, patch_size=t.patch,
                  image_size=arch.onevision["vision_config"]["image_size"], vision_use_head=False)
    token = arch.onevision.get("image_token_index", 151646) if image_token_index is None else image_token_index
    return dict(model_type="llava_onevision", text_config=text, vision_config=vision, vision_feature_layer=-1,
                vision_feature_select_strategy="full", vision_aspect_ratio=arch.onevision["vision_aspect_ratio"],
                image_grid_pinpoints=arch.onevision["image_grid_pinpoints"], image_token_index=token)


def build_random_onevision(arch="onevision-qwen2-7b", llm_layers: int | None = None, dtype: torch.dtype = torch.float32,
                           device: str = "cpu", seed: int = 0, image_token_index: int | None = None):
    """LLaVA-OneVision of the preset's shape (SigLIP, projector, newline, Qwen2) with random weights.

    Built as `llava.model.family_onevision.load_onevision` builds it from a checkpoint (same parts and
    family_inputs), on the meta device and then filled with uniform noise, so 7B dims cost no init
    time. The prompts it takes are the processor's (`<image>` runs of N_i image tokens).
    """
    import functools

    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, SiglipVisionConfig, SiglipVisionModel

    from llava.model.family_llava import llm_config
    from llava.model.family_onevision import onevision_fields, onevision_inputs
    from llava.model.multimodal import LlavaForPruning
    from llava.model.multimodal_encoder.siglip_encoder import SiglipVisionTower
    from llava.model.onevision import OneVisionGeometry

    raw = onevision_raw_config(arch, image_token_index)
    if llm_layers is not None:
        if llm_layers < 1:
            raise ValueError(f"--llm-layers must be >= 1, got {llm_layers}")
        raw["text_config"]["num_hidden_layers"] = llm_layers
    fields, llm_type = onevision_fields(raw)
    config = llm_config(fields, llm_type)
    vision = SiglipVisionConfig(**{k: v for k, v in raw["vision_config"].items() if k != "model_type"})
    vision._attn_implementation = "sdpa"
    with init_empty_weights(include_buffers=False):
        model = LlavaForPruning(config, AutoModelForCausalLM.from_config(config))
        siglip = SiglipVisionModel(vision)
    generator = torch.Generator(device=device).manual_seed(seed)
    _materialize(model, dtype, device, 0.02, generator)
    _materialize(siglip, dtype, device, 0.02, generator)
    model.to(device)
    model.attach_vision_tower(SiglipVisionTower(siglip.to(device), -1, "patch"))
    model.family_inputs = functools.partial(onevision_inputs, geometry=OneVisionGeometry.from_config(raw))
    return model.eval()
