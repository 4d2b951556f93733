"""The embedded tiny LLaVA-1.5: random weights, real geometry (336 px, patch 14, 576 patches).

`python -m llava.model.tiny --out DIR` writes, without any download:
- DIR/clip-vit-tiny-patch14-336/   a full CLIP checkpoint as OpenAI publishes it (CLIPModel: the vision
                                   tower, a tiny text tower, both projections, a byte-level CLIP tokenizer)
                                   + CLIP image-processor config (OpenAI-CLIP values)
- DIR/llava-v1.5-tiny/             the original LLaVA layout (config model_type "llava", mm_* fields,
                                   `model.mm_projector.{0,2}` weights, sentencepiece tokenizer), whose
                                   `mm_vision_tower` points at the CLIP folder
- DIR/llava-1.5-tiny-hf/           (with --hf) the same weights in the llava-hf layout
- DIR/llava-v1.6-tiny/             (with --next) a LLaVA-1.6-shaped anyres checkpoint (original layout)

Random weights produce meaningless text; the pipeline, shapes and numerics are the real ones. Each LLaVA
folder's config.json says `"random_weights": true`, so tools (the kept-patch picture) can say so.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModel

from .family_llava import save_original
from .language_model.llava_llama import LlavaLlamaConfig, LlavaLlamaForCausalLM
from .multimodal_encoder.clip_encoder import CLIPVisionTower

# The seed of the embedded tiny model. Random weights put some [CLS]-attention scores within 1e-7
# of each other; this seed keeps every budget the tests and the quickstart use (576/144/58/29 on the
# bundled samples) clear of such near-ties, so SDPA and eager attention pick the same tokens.
DEFAULT_SEED = 8

CLIP_DIR, LLAVA_DIR, HF_DIR = "clip-vit-tiny-patch14-336", "llava-v1.5-tiny", "llava-1.5-tiny-hf"

# OpenAI CLIP ViT-L/14-336 preprocessing, written in a form both transformers 4.37 and 5.x read.
CLIP_PREPROCESSOR = {
    "image_processor_type": "CLIPImageProcessor",
    "do_resize": True,
    "size": {"shortest_edge": 336},
    "resample": 3,
    "do_center_crop": True,
    "crop_size": {"height": 336, "width": 336},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "do_convert_rgb": True,
}

TINY_VISION = dict(
    image_size=336, patch_size=14, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=4, projection_dim=64, hidden_act="quick_gelu", initializer_factor=2.0,
)
# CLIP's text tower at tiny width (CDPruner's relevance); its projection matches the vision one.
# Real geometry where it matters: 77 positions, <|startoftext|> / <|endoftext|> around the tokens.
TINY_CLIP_TEXT = dict(
    vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
    max_position_embeddings=77, projection_dim=TINY_VISION["projection_dim"], hidden_act="quick_gelu",
    bos_token_id=512, eos_token_id=513, pad_token_id=513,
)
TINY_TEXT = dict(
    hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
    max_position_embeddings=4096, rms_norm_eps=1e-5, initializer_range=0.2, tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=2, pad_token_id=0,
)


# config.json key the tiny checkpoints carry, so tools can say their weights are random (llava.kept_map).
RANDOM_MARKER = "random_weights"


def mark_random_weights(folder: str | Path) -> Path:
    """Add `"random_weights": true` to `folder`/config.json; returns the folder."""
    path = Path(folder) / "config.json"
    raw = json.loads(path.read_text())
    raw[RANDOM_MARKER] = True
    path.write_text(json.dumps(raw, indent=2))
    return Path(folder)


def tiny_config(vocab_size: int, vision_tower: str = CLIP_DIR) -> LlavaLlamaConfig:
    """An original-layout config with LLaVA-1.5's multimodal settings and tiny widths."""
    return LlavaLlamaConfig(
        vocab_size=vocab_size,
        mm_vision_tower=vision_tower,
        mm_hidden_size=TINY_VISION["hidden_size"],
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_projector_type="mlp2x_gelu",
        image_aspect_ratio="pad",
        mm_patch_merge_type="flat",
        tokenizer_model_max_length=2048,
        tokenizer_padding_side="right",
        max_sequence_length=2048,
        architectures=["LlavaLlamaForCausalLM"],
        **TINY_TEXT,
    )


# LLaVA-1.6's grid resolutions (width, height) and merge settings.
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
NEXT_DIR = "llava-v1.6-tiny"


def tiny_next_config(vocab_size: int, vision_tower: str = CLIP_DIR) -> LlavaLlamaConfig:
    """The tiny config with LLaVA-1.6's anyres settings (spatial_unpad merge, newline token)."""
    config = tiny_config(vocab_size, vision_tower)
    config.image_aspect_ratio = "anyres"
    config.image_grid_pinpoints = NEXT_PINPOINTS
    config.mm_patch_merge_type = "spatial_unpad"
    config.unfreeze_mm_vision_tower = True
    config.tokenizer_model_max_length = 4096
    return config


def build_tiny_model(vocab_size: int, seed: int = DEFAULT_SEED, next_version: bool = False) -> LlavaLlamaForCausalLM:
    """A randomly initialised tiny LLaVA-1.5 (or 1.6 with `next_version`) with its tower (fp32, eval)."""
    # Each part draws from its own seeded stream, so its weights do not depend on how the others are built.
    torch.manual_seed(seed)
    clip = CLIPVisionModel(CLIPVisionConfig(**TINY_VISION))
    torch.manual_seed(seed + 1)
    model = LlavaLlamaForCausalLM(tiny_next_config(vocab_size) if next_version else tiny_config(vocab_size))
    model.attach_vision_tower(CLIPVisionTower(clip, name=CLIP_DIR))
    torch.manual_seed(seed + 2)
    with torch.no_grad():
        # The projector gets the LLM's init scale, as the LLaVA model's post_init gave it.
        for layer in model.mm_projector.modules():
            if isinstance(layer, torch.nn.Linear):
                layer.weight.normal_(0.0, model.config.initializer_range)
                layer.bias.zero_()
        # The original LLaVA loader always reads weights as float16; values that float16 holds exactly
        # make that load lossless, so the reference implementation runs the very same model.
        for param in model.parameters():
            param.copy_(param.half().float())
    return model.eval()


def save_tiny_checkpoint(out_dir: str | Path, seed: int = DEFAULT_SEED, hf_layout: bool = False) -> Path:
    """Write the tiny CLIP and LLaVA folders under `out_dir`; returns the LLaVA folder."""
    from .tokenizer import load_tokenizer, save_tiny_tokenizer

    out = Path(out_dir).resolve()
    clip_dir, llava_dir = out / CLIP_DIR, out / LLAVA_DIR
    llava_dir.mkdir(parents=True, exist_ok=True)
    save_tiny_tokenizer(llava_dir)
    vocab_size = len(load_tokenizer(str(llava_dir)))
    model = build_tiny_model(vocab_size, seed)
    tower = model.get_vision_tower()

    save_clip_like_openai(tower.vision_tower, clip_dir, seed)

    # The original layout keeps the tower outside the LLM checkpoint, found through mm_vision_tower.
    model.config.mm_vision_tower = str(clip_dir)
    save_original(model, llava_dir)
    mark_random_weights(llava_dir)

    if hf_layout:
        mark_random_weights(save_hf_layout(model, out / HF_DIR, llava_dir))
    return llava_dir


def save_tiny_next_checkpoint(out_dir: str | Path, seed: int = DEFAULT_SEED) -> Path:
    """An original-layout LLaVA-1.6 tiny checkpoint: anyres config, `model.image_newline`, and a
    fine-tuned tower stored in the checkpoint (`model.vision_tower.vision_tower.vision_model.*`, used
    because `unfreeze_mm_vision_tower` is true) that differs from the CLIP folder's weights."""
    from .tokenizer import load_tokenizer, save_tiny_tokenizer

    out = Path(out_dir).resolve()
    clip_dir, next_dir = out / CLIP_DIR, out / NEXT_DIR
    next_dir.mkdir(parents=True, exist_ok=True)
    save_tiny_tokenizer(next_dir)
    model = build_tiny_model(len(load_tokenizer(str(next_dir))), seed, next_version=True)
    tower = model.get_vision_tower().vision_tower
    if not (clip_dir / "config.json").exists():
        save_clip_like_openai(tower, clip_dir, seed)
    with torch.no_grad():  # the "fine-tuned" tower: the CLIP weights, perturbed
        generator = torch.Generator().manual_seed(seed + 1)
        for p in tower.parameters():
            p.copy_((p + torch.randn(p.shape, generator=generator) * 0.02).half().float())
    model.config.mm_vision_tower = str(clip_dir)
    save_original(model, next_dir, with_tower=True)
    mark_random_weights(next_dir)
    return next_dir


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer without merges: every byte is a token (CLIP's byte-to-unicode table, with and
    without the `</w>` word end), then <|startoftext|> (512) and <|endoftext|> (513, the highest id,
    as in CLIP's vocabulary). It lowercases and splits words as CLIP's does."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
    extra = (256 + i for i in range(256))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    return CLIPTokenizer(vocab=vocab, merges=[])


def tiny_clip_model(clip: CLIPVisionModel, seed: int = DEFAULT_SEED) -> CLIPModel:
    """A full CLIPModel around `clip`'s vision weights, with a seeded tiny text tower and projections."""
    torch.manual_seed(seed + 3)  # its own stream: the vision and LLaVA weights do not change with it
    full = CLIPModel(CLIPConfig(text_config=CLIPTextConfig(**TINY_CLIP_TEXT).to_dict(),
                                vision_config=clip.config.to_dict(), projection_dim=TINY_VISION["projection_dim"]))
    full.vision_model.load_state_dict(clip.state_dict())
    with torch.no_grad():  # float16-exact values, like the rest of the tiny model
        for param in full.parameters():
            param.copy_(param.half().float())
    return full.eval()


def save_clip_like_openai(clip: CLIPVisionModel, dest: Path, seed: int = DEFAULT_SEED) -> None:
    """Save CLIP as the published CLIP checkpoints are laid out: a full CLIPModel (`vision_model.*`,
    `text_model.*`, both projections), its tokenizer and the image processor.

    `CLIPModel.save_pretrained` keeps the `vision_model.` prefix that older releases (and the original
    LLaVA on them) expect; the vision weights are `clip`'s, the text half is `tiny_clip_model`'s.
    """
    dest.mkdir(parents=True, exist_ok=True)
    tiny_clip_model(clip, seed).save_pretrained(dest)
    tiny_clip_tokenizer().save_pretrained(dest)
    (dest / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR, indent=2))


def save_hf_layout(model: LlavaLlamaForCausalLM, dest: Path, tokenizer_dir: Path) -> Path:
    """Save `model` as a llava-hf LlavaForConditionalGeneration folder (weights, tokenizer, processor)."""
    import shutil

    from .hf_layout import to_hf_model

    hf = to_hf_model(model)
    hf.save_pretrained(dest)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, dest / name)
    (dest / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR, indent=2))
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="playground/tiny", help="output folder")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed of the weights")
    parser.add_argument("--hf", action="store_true", help="also write the llava-hf layout")
    parser.add_argument("--next", action="store_true", help="also write a tiny LLaVA-1.6 (anyres) checkpoint")
    args = parser.parse_args(argv)
    path = save_tiny_checkpoint(args.out, args.seed, args.hf)
    print(f"tiny LLaVA-1.5 checkpoint: {path}")
    if args.next:
        print(f"tiny LLaVA-1.6 checkpoint: {save_tiny_next_checkpoint(args.out, args.seed)}")


if __name__ == "__main__":
    main()
