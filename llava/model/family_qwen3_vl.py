"""The Qwen3-VL family: `Qwen3VLForConditionalGeneration` checkpoints (e.g. Qwen/Qwen3-VL-8B-Instruct).

The ViT reads 16 px patches (two frames per temporal patch for images: the frame is repeated), its
patch merger turns each 2 x 2 group of patches into one LLM token, and its DeepStack mergers turn
the hidden states of `deepstack_visual_indexes` into features added to the first LLM layers at
the visual positions. The LLM is `Qwen3VLTextModel` with interleaved M-RoPE. The model is
`llava.model.qwen3_vl.Qwen3VLForPruning`, composed of the parts transformers' own class loads (the
vision model, the text model, the LM head): the checkpoint is read by
`Qwen3VLForConditionalGeneration.from_pretrained`, so every weight name is the library's own.
The processor comes from `llava.vision_compat` (image-only when torchvision is not usable).

`python -m llava.model.family_qwen3_vl --out DIR` writes the tiny checkpoint (random weights, real
geometry: 16 px patches, 2 x 2 merge, DeepStack layers, interleaved M-RoPE; small widths) with
transformers' own classes and `save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

from .families import LoadOptions, register_family, tiny_checkpoint_cli
from .inputs_builder import ProcessorInputs, register_inputs_builder

MODEL_TYPE = "qwen3_vl"
FAMILY = "qwen3_vl"
TINY_DIR = "qwen3_vl-tiny"


def is_qwen3_vl_config(raw: dict) -> bool:
    return raw.get("model_type") == MODEL_TYPE


# The eval drivers' prompts and inputs: the processor's chat template and outputs (pixel_values ->
# images; image_grid_thw passed on by name; mm_token_type_ids the model derives from the pad tokens).
register_inputs_builder(FAMILY, ProcessorInputs(image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
                                                ignore=("mm_token_type_ids",)))


def _tiny(out_dir) -> str:
    return str(save_tiny_qwen3_vl(Path(out_dir) / TINY_DIR))


@register_family(FAMILY, detect=is_qwen3_vl_config, tiny=_tiny, same_tiny=False)
def load_qwen3_vl(path: str, raw: dict, opts: LoadOptions):
    """Qwen3-VL (Qwen3VLForConditionalGeneration): ViT with 2x2 merger and DeepStack, Qwen3 LLM with M-RoPE."""
    from transformers import Qwen3VLForConditionalGeneration

    from llava.vision_compat import load_processor

    from .checkpoint_checks import load_weights
    from .input_checks import check_config_sections
    from .multimodal_encoder.qwen3_vl_encoder import Qwen3VLVisionTower
    from .qwen3_vl import Qwen3VLForPruning

    check_config_sections(raw, ("vision_config", "text_config"), path)
    vision_type = raw.get("vision_config", {}).get("model_type", "qwen3_vl_vision")
    if vision_type not in ("qwen3_vl_vision", "qwen3_vl"):  # early checkpoints wrote "qwen3_vl" (transformers fixes it)
        raise ValueError(f"{path}: vision_config.model_type={vision_type!r}; a Qwen3-VL checkpoint has "
                         "'qwen3_vl_vision'")
    kwargs = dict(opts.llm_kwargs)
    kwargs.setdefault("dtype", opts.dtype)
    full = load_weights(Qwen3VLForConditionalGeneration, path, opts.allow_missing_weights, what="the Qwen3-VL model",
                        **kwargs).eval()
    tower = Qwen3VLVisionTower(full.model.visual, cls_stand_in=opts.cls_stand_in, name=str(path))
    tower.vision_tower.set_attn_implementation(opts.vision_attn_implementation)
    tower.image_processor = load_processor(path)  # a folder without processor files is refused, naming them
    return Qwen3VLForPruning(full.config, tower, full.model.language_model, full.lm_head, full.generation_config).eval()


# ---- the tiny checkpoint --------------------------------------------------------------------------
# Real geometry (16 px patches, 2x2 merge, two frames per temporal patch, the 48 x 48 learned position
# grid, DeepStack layers before the last block), small widths.
TINY_VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16, spatial_merge_size=2,
                   temporal_patch_size=2, num_position_embeddings=2304, deepstack_visual_indexes=[0, 1],
                   initializer_range=0.2)
# head_dim 16: the interleaved M-RoPE sections (t, h, w) cover its 8 frequency bands.
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, max_position_embeddings=32768, initializer_range=0.05,
                 rope_parameters={"rope_type": "default", "rope_theta": 5000000.0, "mrope_section": [2, 3, 3],
                                  "mrope_interleaved": True})
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>")
# One user turn: the image (its pad token between the vision markers, as the released template
# writes it; the processor expands the pad), then the question.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The tiny processor's pixel range: images resize to 32 px multiples between these areas (the
# released one allows 256^2 to 4096^2), so test sequences stay short.
TINY_MIN_PIXELS, TINY_MAX_PIXELS = 64 * 64, 384 * 384


def save_tiny_qwen3_vl(folder, seed: int = 0, min_pixels: int = TINY_MIN_PIXELS,
                       max_pixels: int = TINY_MAX_PIXELS) -> Path:
    """Write a tiny Qwen3VLForConditionalGeneration (random weights, real geometry), its processor,
    tokenizer and chat template, all with transformers' own `save_pretrained`."""
    import torch
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    from llava.vision_compat import image_only

    from .family_onevision import tiny_word_tokenizer
    from .tiny import mark_random_weights

    folder = Path(folder)
    tok = tiny_word_tokenizer(SPECIAL_TOKENS)
    ids = dict(zip(SPECIAL_TOKENS, tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))))
    text = dict(TINY_TEXT, vocab_size=len(tok), pad_token_id=ids["<|endoftext|>"])
    vision = dict(TINY_VISION, out_hidden_size=TINY_TEXT["hidden_size"])
    config = Qwen3VLConfig(vision_config=vision, text_config=text, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.bos_token_id = None
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessorPil(patch_size=16, merge_size=2, temporal_patch_size=2,
                                               min_pixels=min_pixels, max_pixels=max_pixels,
                                               image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    processor = image_only(Qwen3VLProcessor)(image_processor=image_processor, tokenizer=tok,
                                             chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return mark_random_weights(folder)


def main(argv=None) -> None:
    tiny_checkpoint_cli(argv, "Qwen3-VL", save_tiny_qwen3_vl, TINY_DIR)


if __name__ == "__main__":
    main()
