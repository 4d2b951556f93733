"""The Qwen2.5-VL family: `Qwen2_5_VLForConditionalGeneration` checkpoints (e.g. Qwen/Qwen2.5-VL-7B-Instruct).

Dynamic resolution with 14 px patches, a 2 x 2 spatial merge done by the patch merger (the
projector), window attention except in the full-attention blocks, and M-RoPE in the LLM. The model
is `llava.model.qwen2_5_vl.QwenVLForPruning` composed of the checkpoint's own modules: transformers
loads the checkpoint (its key mapping covers both the released and the 5.x layouts) and the parts are
taken apart: the ViT goes into the adapter (`multimodal_encoder.qwen2_5_vl_encoder`), the text model
(`Qwen2_5_VLTextModel`; transformers maps no causal-LM class to it) and `lm_head` into the model.
The processor comes from `llava.vision_compat` (image-only when torchvision is not usable).

`python -m llava.model.family_qwen2_5_vl --out DIR` writes the tiny checkpoint (random weights, real
geometry) with transformers' own classes and `save_pretrained`.
"""

from __future__ import annotations

from pathlib import Path

from .families import LoadOptions, register_family, tiny_checkpoint_cli
from .inputs_builder import ProcessorInputs, register_inputs_builder

MODEL_TYPE = "qwen2_5_vl"
TINY_DIR = "qwen2_5_vl-tiny"


def is_qwen2_5_vl_config(raw: dict) -> bool:
    return raw.get("model_type") == MODEL_TYPE


# The eval drivers' prompts and inputs: the processor's chat template and outputs (pixel_values ->
# images; image_grid_thw passed on by name; mm_token_type_ids the model derives from the pad tokens).
register_inputs_builder("qwen2_5_vl", ProcessorInputs(image_placeholder="<|vision_start|><|image_pad|><|vision_end|>",
                                                      ignore=("mm_token_type_ids",)))


def _tiny(out_dir) -> str:
    return str(save_tiny_qwen2_5_vl(Path(out_dir) / TINY_DIR))


@register_family("qwen2_5_vl", detect=is_qwen2_5_vl_config, tiny=_tiny, same_tiny=False)
def load_qwen2_5_vl(path: str, raw: dict, opts: LoadOptions):
    """Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration): dynamic-resolution ViT, patch merger, M-RoPE Qwen2 LLM."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    from llava.vision_compat import load_processor

    from .checkpoint_checks import load_weights
    from .input_checks import check_config_sections
    from .multimodal_encoder.qwen2_5_vl_encoder import Qwen25VisionTower
    from .qwen2_5_vl import QwenVLForPruning

    # the released config keeps the text fields at the top level, the 5.x layout in text_config
    check_config_sections(raw, ("vision_config",) if "hidden_size" in raw else ("vision_config", "text_config"), path)
    hf = load_weights(Qwen2_5_VLForConditionalGeneration, path, opts.allow_missing_weights,
                      what="the Qwen2.5-VL model", **opts.llm_kwargs).eval()
    tower = Qwen25VisionTower(hf.model.visual, name=str(path), cls_stand_in=opts.cls_stand_in)
    model = QwenVLForPruning(hf.config, tower, hf.model.language_model, hf.lm_head, hf.generation_config)
    tower.image_processor = load_processor(path)  # a folder without processor files is refused, naming them
    return model.eval()


# ---- the tiny checkpoint --------------------------------------------------------------------------
# Real geometry (14 px patches, 2 x 2 merge, 112 px windows, a full-attention block every other
# block as the 7B's every 8th, M-RoPE sections in the 7B's 2:3:3 ratio), small widths.
TINY_VISION = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                   fullatt_block_indexes=[1, 3], window_size=112, patch_size=14, spatial_merge_size=2,
                   temporal_patch_size=2, tokens_per_second=2, initializer_range=0.2)
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=32768, initializer_range=0.2,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]})
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>",
                  "<|vision_start|>", "<|vision_end|>")
# One user turn with the image first, then the question, in Qwen's chat markup.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen2_5_vl(folder, seed: int = 0) -> Path:
    """Write a tiny Qwen2_5_VLForConditionalGeneration (random weights, real geometry), its processor,
    tokenizer and chat template, all with transformers' own `save_pretrained`."""
    import torch
    from transformers import (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                              Qwen2VLImageProcessorPil)

    from llava.vision_compat import image_only

    from .family_onevision import tiny_word_tokenizer
    from .tiny import mark_random_weights

    folder = Path(folder)
    tok = tiny_word_tokenizer(SPECIAL_TOKENS)
    ids = dict(zip(SPECIAL_TOKENS, tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))))
    text = dict(TINY_TEXT, vocab_size=len(tok), bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    config = Qwen2_5_VLConfig(text_config=text, vision_config=dict(TINY_VISION),
                              image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                              vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
                              tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    image_processor = Qwen2VLImageProcessorPil(patch_size=TINY_VISION["patch_size"],
                                               merge_size=TINY_VISION["spatial_merge_size"],
                                               temporal_patch_size=TINY_VISION["temporal_patch_size"])
    processor = image_only(Qwen2_5_VLProcessor)(image_processor=image_processor, tokenizer=tok,
                                                chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return mark_random_weights(folder)


def main(argv=None) -> None:
    tiny_checkpoint_cli(argv, "Qwen2.5-VL", save_tiny_qwen2_5_vl, TINY_DIR)


if __name__ == "__main__":
    main()
