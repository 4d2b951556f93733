"""Tiny HF checkpoints of the processor families, built without any of our code (no `llava` import).

The held-out check ("Done when" of issue 15) loads checkpoints that our `tiny` builders never made.
These builders stand in for it: each uses only transformers' config/model classes, a `tokenizers` BPE
trained here on a few sentences with the family's special tokens (wrapped in transformers' own
tokenizer classes), the family's PIL image processor and a chat template written here, with geometry
away from our tiny defaults (depths, widths, windows and full-attention blocks, tied embeddings,
SigLIP size and grid pinpoints, min/max pixels).

The stock processor classes of these families cannot be built without torchvision (their video part
needs it), so a builder writes the processor's files in the layouts transformers writes them:
- "processor": `processor_config.json` as the stock `ProcessorMixin.save_pretrained` writes it (the
  image processor's dict nested under "image_processor", a "video_processor" entry beside it, the
  processor's own arguments), the tokenizer's files and `chat_template.jinja`;
- "parts": the image processor and tokenizer each saved on its own (`preprocessor_config.json`,
  the tokenizer's own chat template file), no processor_class anywhere;
- "legacy": as transformers 4.x wrote it: `preprocessor_config.json` naming the processor class,
  the processor's arguments (if any) in a flat `processor_config.json`, `chat_template.json`, a
  `video_preprocessor_config.json`, Qwen's tokenizer class as "Qwen2TokenizerFast".

`reference_inputs` builds a Qwen prompt's model inputs from the tokenizer and image processor alone
(the pad run of each image expanded to grid.prod() / merge^2 tokens and `mm_token_type_ids` marking
them, as the stock processor does).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

CORPUS = [
    "what is here ? describe this image in one word .",
    "the red circle is left of the blue square and the stripes are green",
    "Answer the question using a single word or phrase .",
    "a cat , a dog , an apple and a brick on the table ; which is a fruit ?",
    "You are a helpful assistant . user assistant system",
]

OV_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]

# Qwen-style templates with a default system turn (as the released checkpoints have), written here.
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for part in m['content'] %}{% if part['type'] == 'image' %}<|vision_start|><|image_pad|>"
    "<|vision_end|>{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
OV_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] + ' ' }}{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for part in m['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _bpe(special: list[str]):
    """A byte-level BPE trained on CORPUS (the special tokens first, so they take ids 0..n-1)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def ov_tokenizer():
    """PreTrainedTokenizerFast around the trained BPE, OneVision's special tokens, and no pad token."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe(OV_SPECIAL), eos_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": OV_SPECIAL[1:]})
    return tok


def qwen_tokenizer():
    """transformers' Qwen2Tokenizer from the trained BPE's vocabulary and merges, Qwen's special tokens."""
    from transformers import Qwen2Tokenizer

    model = json.loads(_bpe(QWEN_SPECIAL).to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>",
                         pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL[1:]})
    return tok


def _write_processor(folder: Path, layout: str, tokenizer, image_processor, processor_class: str,
                     template: str, **processor_args) -> None:
    if layout == "processor":
        tokenizer.save_pretrained(folder)
        config = {"image_processor": image_processor.to_dict(), "processor_class": processor_class,
                  "video_processor": {"video_processor_type": processor_class.replace("Processor", "VideoProcessor"),
                                      "do_resize": True, "do_sample_frames": False},
                  **processor_args}
        config["image_processor"].pop("processor_class", None)
        (folder / "processor_config.json").write_text(json.dumps(config, indent=2))
        (folder / "chat_template.jinja").write_text(template)
    elif layout == "parts":
        if processor_args:
            raise ValueError(f"layout 'parts' cannot hold processor arguments {sorted(processor_args)}")
        tokenizer.chat_template = template
        tokenizer.save_pretrained(folder)
        image_processor.save_pretrained(folder)
    elif layout == "legacy":
        tokenizer.save_pretrained(folder)
        image_processor.save_pretrained(folder)
        _edit_json(folder / "preprocessor_config.json", processor_class=processor_class)
        if processor_args:  # 4.x kept the processor's own arguments in a flat processor_config.json
            (folder / "processor_config.json").write_text(json.dumps({"processor_class": processor_class,
                                                                      **processor_args}, indent=2))
        if "Qwen2Tokenizer" in json.loads((folder / "tokenizer_config.json").read_text()).get("tokenizer_class", ""):
            _edit_json(folder / "tokenizer_config.json", tokenizer_class="Qwen2TokenizerFast")
        (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
        (folder / "video_preprocessor_config.json").write_text(json.dumps(
            {"processor_class": processor_class, "do_resize": True}))
    else:
        raise ValueError(f"unknown layout {layout!r}")


def _edit_json(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}, indent=2))


def _finish(model, folder: Path, tok, eos: str) -> None:
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(eos)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(folder)


def build_onevision(folder, layout: str = "processor", seed: int = 1) -> Path:
    """LLaVA-OneVision: SigLIP 224/14 (16 x 16 patches per view), 3 vision layers, feature layer -2,
    custom grid pinpoints, anyres_max_4, a 3-layer Qwen2 with tied embeddings, a tokenizer without pad token."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessorPil)

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = ov_tokenizer()
    pinpoints = [[224, 448], [448, 224], [448, 448], [224, 672], [672, 224]]
    vision = dict(model_type="siglip_vision_model", image_size=224, patch_size=14, hidden_size=48,
                  intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, vision_use_head=False)
    text = dict(model_type="qwen2", vocab_size=len(tok), hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=8192, initializer_range=0.1,
                eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=None,
                bos_token_id=None, tie_word_embeddings=True)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                  image_token_index=tok.convert_tokens_to_ids("<image>"),
                                  video_token_index=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-2,
                                  vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_4",
                                  image_grid_pinpoints=pinpoints, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    _finish(model, folder, tok, "<|im_end|>")
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 224, "width": 224},
                                                      image_grid_pinpoints=pinpoints)
    _write_processor(folder, layout, tok, image_processor, "LlavaOnevisionProcessor", OV_TEMPLATE,
                     num_image_tokens=256, vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_4")
    return folder


QWEN25_MIN_PIXELS, QWEN25_MAX_PIXELS = 4 * 28 * 28, 160 * 28 * 28


def build_qwen2_5_vl(folder, layout: str = "parts", seed: int = 2) -> Path:
    """Qwen2.5-VL: a 3-block ViT (full attention in block 0 only), 40 wide, a 3-layer text model 96 wide
    (M-RoPE sections 4:4:4), tied embeddings, 4..160 merged tokens per image."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text = dict(vocab_size=len(tok), hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192, initializer_range=0.1,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 4, 4]},
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=None,
                tie_word_embeddings=True)
    vision = dict(depth=3, hidden_size=40, intermediate_size=80, num_heads=2, out_hidden_size=96,
                  fullatt_block_indexes=[0], window_size=56, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, tokens_per_second=2, initializer_range=0.1)
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                              video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                              vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    _finish(model, folder, tok, "<|im_end|>")
    image_processor = Qwen2VLImageProcessorPil(min_pixels=QWEN25_MIN_PIXELS, max_pixels=QWEN25_MAX_PIXELS,
                                               patch_size=14, merge_size=2, temporal_patch_size=2)
    _write_processor(folder, layout, tok, image_processor, "Qwen2_5_VLProcessor", QWEN_TEMPLATE)
    return folder


QWEN3_MIN_PIXELS, QWEN3_MAX_PIXELS = 4 * 32 * 32, 128 * 32 * 32


def build_qwen3_vl(folder, layout: str = "processor", seed: int = 3) -> Path:
    """Qwen3-VL: 16 px patches, a 4-block ViT with DeepStack taps at blocks 0 and 2, a 3-layer text
    model (interleaved M-RoPE, sections 4:4:4), untied embeddings, 4..128 merged tokens per image."""
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = qwen_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    text = dict(vocab_size=len(tok), hidden_size=96, intermediate_size=160, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, head_dim=24, max_position_embeddings=8192,
                initializer_range=0.1,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 4, 4],
                                 "mrope_interleaved": True},
                eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], bos_token_id=None,
                tie_word_embeddings=False)
    vision = dict(depth=4, hidden_size=48, intermediate_size=96, num_heads=4, out_hidden_size=96, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=144,
                  deepstack_visual_indexes=[0, 2], initializer_range=0.1)
    config = Qwen3VLConfig(text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
                           video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
                           vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    _finish(model, folder, tok, "<|im_end|>")
    image_processor = Qwen2VLImageProcessorPil(min_pixels=QWEN3_MIN_PIXELS, max_pixels=QWEN3_MAX_PIXELS, patch_size=16,
                                               merge_size=2, temporal_patch_size=2)
    _write_processor(folder, layout, tok, image_processor, "Qwen3VLProcessor", QWEN_TEMPLATE)
    return folder


def reference_inputs(folder, prompt: str, images: list) -> dict:
    """A Qwen-VL prompt's model inputs from the folder's tokenizer and image processor alone."""
    from transformers import AutoTokenizer, Qwen2VLImageProcessorPil

    tok = AutoTokenizer.from_pretrained(str(folder))
    out = {}
    if images:
        processor = Qwen2VLImageProcessorPil.from_pretrained(str(folder))
        vision = processor(images=images, return_tensors="pt")
        merge = processor.merge_size ** 2
        pieces = prompt.split("<|image_pad|>")
        assert len(pieces) == len(images) + 1, "one pad token per image in the prompt"
        prompt = pieces[0] + "".join("<|image_pad|>" * int(g.prod() // merge) + p
                                     for g, p in zip(vision["image_grid_thw"], pieces[1:]))
        out.update(pixel_values=vision["pixel_values"], image_grid_thw=vision["image_grid_thw"])
    enc = tok(prompt, return_tensors="pt")
    # the stock processor's token types (1 at image pads): the stock model numbers M-RoPE from them
    types = (enc["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).int()
    out.update(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], mm_token_type_ids=types)
    return out
