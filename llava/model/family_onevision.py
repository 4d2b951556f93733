"""The LLaVA-OneVision family: `LlavaOnevisionForConditionalGeneration` checkpoints (llava-hf layout).

e.g. llava-hf/llava-onevision-qwen2-7b-ov-hf: SigLIP so400m at 384/14 (729 patches per view, the
last layer's output before the post-layernorm), a 2-layer GELU projector, anyres_max_9 grids with
unpadding, down-sampling and newlines (`llava.model.onevision`), and a Qwen2 LLM. The model is the
platform's `LlavaForPruning` built from its parts: the SigLIP adapter, the projector and newline
from the checkpoint's tensors, the LLM through `AutoModelForCausalLM`, and OneVision's image path
as the model's `family_inputs`. The processor comes from `llava.vision_compat` (image-only when
torchvision is not usable).

`python -m llava.model.family_onevision --out DIR` writes the tiny checkpoint (random weights, real
geometry) with transformers' own classes and `save_pretrained`.
"""

from __future__ import annotations

import functools
from pathlib import Path

from .checkpoint import strip_prefix
from .families import LoadOptions, register_family, tiny_checkpoint_cli
from .input_checks import check_config_sections, check_image_sizes, check_pixels, check_prompts
from .inputs_builder import ProcessorInputs, register_inputs_builder
from .family_llava import HF_LLM_KEYS, HF_MM, _Fit, _install_mm_parts, _load_llm, hf_mm_tensors, llm_config
from .multimodal import LlavaForPruning
from .onevision import OneVisionGeometry, collapse_image_runs, encode_onevision

MODEL_TYPE = "llava_onevision"
TINY_DIR = "llava-onevision-tiny"


def is_onevision_config(raw: dict) -> bool:
    return raw.get("model_type") == MODEL_TYPE


def onevision_fields(raw: dict) -> tuple[dict, str]:
    """The LLM config fields (with the platform's mm_* values) of a OneVision config.json, and the LLM type."""
    text, vision = dict(raw["text_config"]), dict(raw["vision_config"])
    layer = raw.get("vision_feature_layer", -1)
    if not isinstance(layer, int):
        raise ValueError(f"vision_feature_layer={layer!r}: only a single feature layer is supported")
    strategy = raw.get("vision_feature_select_strategy", "full")
    if strategy != "full":
        raise ValueError(f"vision_feature_select_strategy={strategy!r}: SigLIP has no [CLS] token; only 'full' "
                         "is supported")
    act = raw.get("projector_hidden_act", "gelu")
    if act != "gelu":
        raise ValueError(f"projector_hidden_act={act!r} is not supported (expected 'gelu')")
    llm_type = text.pop("model_type", "qwen2")
    for key in ("architectures", "transformers_version", "_name_or_path"):
        text.pop(key, None)
    fields = dict(
        text, mm_vision_tower=None, mm_hidden_size=vision["hidden_size"], mm_vision_select_layer=layer,
        mm_vision_select_feature="patch", mm_projector_type="mlp2x_gelu",
        image_aspect_ratio=raw.get("vision_aspect_ratio", "anyres_max_9"), mm_patch_merge_type="spatial_unpad",
        tie_word_embeddings=raw.get("tie_word_embeddings", text.get("tie_word_embeddings", False)),
    )
    return fields, llm_type


def onevision_inputs(model, input_ids, attention_mask, images, image_sizes, visual_token_num, pruning, signals,
                     geometry: OneVisionGeometry):
    """`family_inputs` of a OneVision model: encode (and prune) the images, collapse their placeholder runs."""
    check_prompts(input_ids, attention_mask, MODEL_TYPE)
    if images is None and signals is None:
        if (input_ids == geometry.image_token_id).any():
            raise ValueError(f"{MODEL_TYPE}: the prompts hold <image> tokens but no images were given; pass the "
                             "processor's pixel_values and image_sizes")
        return input_ids, attention_mask, None
    if image_sizes is None:
        raise ValueError(f"{MODEL_TYPE}: image_sizes (height, width per image, as the processor returns them) "
                         "are required")
    if images is not None:
        for views in (images if isinstance(images, (list, tuple)) else [images]):
            check_pixels(views, MODEL_TYPE)
        image_sizes = check_image_sizes(image_sizes, len(images), MODEL_TYPE)
    encoded = encode_onevision(model, images, image_sizes, geometry, visual_token_num, pruning, signals)
    ids, mask = collapse_image_runs(input_ids, attention_mask, encoded.unpruned_counts, geometry.image_token_id)
    return ids, mask, encoded


# The eval drivers' prompts and inputs: the processor's chat template and outputs (its batch_num_images
# is bookkeeping the model does not take).
register_inputs_builder("llava-onevision", ProcessorInputs(ignore=("batch_num_images",)))


def _tiny(out_dir) -> str:
    return str(save_tiny_onevision(Path(out_dir) / TINY_DIR))


@register_family("llava-onevision", detect=is_onevision_config, tiny=_tiny, same_tiny=False)
def load_onevision(path: str, raw: dict, opts: LoadOptions) -> LlavaForPruning:
    """LLaVA-OneVision (LlavaOnevisionForConditionalGeneration, llava-hf layout): SigLIP, anyres_max grids, Qwen2."""
    from llava.vision_compat import load_processor

    from .multimodal_encoder.siglip_encoder import SiglipVisionTower

    check_config_sections(raw, ("text_config", "vision_config"), path)
    fields, llm_type = onevision_fields(raw)
    geometry = OneVisionGeometry.from_config(raw)
    fit = _Fit()
    llm = _load_llm(path, llm_config(fields, llm_type), opts, HF_MM, fit, key_mapping=HF_LLM_KEYS)
    model = LlavaForPruning(llm.config, llm)
    found, projector = hf_mm_tensors(path, "image_newline", "vision_tower.")
    _install_mm_parts(model, projector, found.get("image_newline"), fit)
    tower = SiglipVisionTower.from_config(dict(raw["vision_config"]), fields["mm_vision_select_layer"],
                                          attn_implementation=opts.vision_attn_implementation,
                                          cls_stand_in=opts.cls_stand_in)
    state = {k[len("vision_model."):] if k.startswith("vision_model.") else k: v
             for k, v in strip_prefix(found, "vision_tower.").items()}
    missing, unexpected = tower.vision_tower.load_state_dict(state, strict=False)
    fit.add(missing, unexpected, prefix="model.vision_tower.")
    fit.check(path, opts, what="the LLaVA-OneVision model")
    model.attach_vision_tower(tower)
    tower.image_processor = load_processor(path)  # a folder without processor files is refused, naming them
    model.family_inputs = functools.partial(onevision_inputs, geometry=geometry)
    return model


# ---- the tiny checkpoint --------------------------------------------------------------------------
TINY_SIGLIP = dict(image_size=384, patch_size=14, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=2, vision_use_head=False)
TINY_QWEN2 = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=32768, initializer_range=0.2,
                  tie_word_embeddings=False)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
# One user turn with the image first, then the question (what the released template renders for it).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'image' %}<image>\n"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_word_tokenizer(special_tokens=SPECIAL_TOKENS, words: int = 200):
    """A small offline word-level tokenizer (`tokenizers`) with the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["<unk>"] + [f"w{i}" for i in range(words)] + list("abcdefghijklmnopqrstuvwxyz0123456789?.,:!")
    vocab += ["what", "is", "here", "the", "a", "image", "user", "assistant", "system", "describe", "this"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token=special_tokens[0],
                                  eos_token="<|im_end|>")
    tok.add_special_tokens({"additional_special_tokens": list(special_tokens[1:])})
    return tok


def save_tiny_onevision(folder, seed: int = 0, vision_aspect_ratio: str = "anyres_max_9") -> Path:
    """Write a tiny LlavaOnevisionForConditionalGeneration (random weights, 384/14 SigLIP geometry), its
    processor, tokenizer and chat template, all with transformers' own `save_pretrained`.

    vision_aspect_ratio: the checkpoint's `anyres_max_<n>`; a small n makes small images down-sample
    (the tests use it to keep sequences short).
    """
    import torch
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor, Qwen2Config,
                              SiglipVisionConfig)

    from llava.vision_compat import image_only

    from .tiny import mark_random_weights

    folder = Path(folder)
    tok = tiny_word_tokenizer()
    ids = tok.convert_tokens_to_ids(list(SPECIAL_TOKENS))
    text = Qwen2Config(vocab_size=len(tok), bos_token_id=None, eos_token_id=ids[2], pad_token_id=ids[0],
                       **TINY_QWEN2)
    config = LlavaOnevisionConfig(vision_config=SiglipVisionConfig(**TINY_SIGLIP).to_dict(),
                                  text_config=text.to_dict(), image_token_index=ids[3], video_token_index=ids[4],
                                  vision_feature_layer=-1, vision_feature_select_strategy="full",
                                  vision_aspect_ratio=vision_aspect_ratio)
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids[2]
    model.generation_config.pad_token_id = ids[0]
    model.save_pretrained(folder)
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor=LlavaOnevisionImageProcessorPil(), tokenizer=tok, num_image_tokens=TINY_SIGLIP["image_size"]
        // TINY_SIGLIP["patch_size"] * (TINY_SIGLIP["image_size"] // TINY_SIGLIP["patch_size"]),
        vision_feature_select_strategy="full", vision_aspect_ratio=vision_aspect_ratio, chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return mark_random_weights(folder)


def main(argv=None) -> None:
    tiny_checkpoint_cli(argv, "LLaVA-OneVision", save_tiny_onevision, TINY_DIR)


if __name__ == "__main__":
    main()
