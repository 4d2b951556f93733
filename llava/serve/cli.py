"""Ask one question about one image from the command line, optionally saving the kept-patch map.

    python -m llava.serve.cli --model-path P --image-file F --visual-token-num 58 \
        --query "What is shown?" --save-kept-map kept.png

Without --query it reads questions interactively (multi-turn, as LLaVA's CLI does).
"""

from __future__ import annotations

import argparse
import sys

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


def answer(model, tokenizer, image_processor, image, conv, query: str, gen_kwargs: dict, first_turn: bool) -> str:
    """Append `query` to `conv`, generate, record the answer in `conv`, and return it."""
    from llava.mm_utils import process_images, tokenizer_image_token

    text = DEFAULT_IMAGE_TOKEN + "\n" + query if first_turn else query
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    ids = tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)
    device = model.get_model().embed_tokens.weight.device
    pixels = process_images([image], image_processor, model.config, model.pruning.anyres_mode)
    pixels = pixels.to(device=device, dtype=model.get_vision_tower().dtype)
    out = model.generate(ids.to(device), images=pixels, image_sizes=[image.size], **gen_kwargs)
    reply = tokenizer.batch_decode(out, skip_special_tokens=True)[0].strip()
    conv.messages[-1][-1] = reply
    return reply


def main(argv: list[str] | None = None) -> None:
    from llava.conversation import conv_templates
    from llava.kept_map import draw_kept_patches, model_view
    from llava.mm_utils import load_image
    from llava.model.builder import load_pretrained_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None)
    parser.add_argument("--image-file", required=True)
    parser.add_argument("--query", default=None, help="one question; omit for an interactive session")
    parser.add_argument("--conv-mode", default="vicuna_v1")
    parser.add_argument("--visual-token-num", type=int, default=None)
    parser.add_argument("--pruning-method", default="fastervlm")
    parser.add_argument("--pruning-args", default=None)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--torch-dtype", default="auto")
    parser.add_argument("--vision-tower", default=None)
    parser.add_argument("--vision-attn", default="sdpa", choices=["sdpa", "eager"],
                        help="the CLIP tower's attention (eager reproduces an eager tower bit for bit)")
    parser.add_argument("--save-kept-map", default=None, help="PNG showing the kept patches over the image")
    args = parser.parse_args(argv)

    image = load_image(args.image_file)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, args.model_base, None, device=args.device, torch_dtype=args.torch_dtype,
        visual_token_num=args.visual_token_num, pruning_method=args.pruning_method,
        pruning_args=args.pruning_args, vision_tower_path=args.vision_tower,
        vision_attn_implementation=args.vision_attn,
    )
    gen_kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0, use_cache=True)
    if args.temperature > 0:
        gen_kwargs["temperature"] = args.temperature
    conv = conv_templates[args.conv_mode].copy()
    queries = [args.query] if args.query is not None else _interactive(conv)
    for turn, query in enumerate(queries):
        reply = answer(model, tokenizer, image_processor, image, conv, query, gen_kwargs, turn == 0)
        counts = model.last_multimodal.token_counts
        print(f"{conv.roles[1]}: {reply}")
        print(f"[visual tokens seen by the LLM: {counts[0]}]", file=sys.stderr)
        if turn == 0 and args.save_kept_map:
            grid = model.get_vision_tower().num_patches_per_side
            view = model_view(image, image_processor, model.config.image_aspect_ratio, model.get_vision_tower().config.image_size)
            draw_kept_patches(view, model.last_multimodal.kept_indices[0], grid).save(args.save_kept_map)
            print(f"kept-patch map written to {args.save_kept_map}", file=sys.stderr)


def _interactive(conv):
    while True:
        try:
            text = input(f"{conv.roles[0]}: ")
        except EOFError:
            return
        if not text:
            return
        yield text


if __name__ == "__main__":
    with torch.inference_mode():
        main()
