"""Ask one question about one image from the command line, optionally saving the kept-patch map.

Without --query it reads questions interactively (multi-turn, as LLaVA's CLI does).
"""

from __future__ import annotations

import argparse
import os
import sys

from llava.cli_errors import add_debug_arg, run_main
from llava.cli_help import METHOD_NAMES, HelpFormatter
from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from llava.eval.cli_args import DTYPE_NAMES, looks_local

EPILOG = """examples:
  # one question at K=58, with the picture of the kept patches:
  python -m llava.serve.cli --model-path liuhaotian/llava-v1.5-7b --image-file assets/samples/shapes.png \\
      --visual-token-num 58 --query "What is shown?" --save-kept-map kept.png

  # an interactive session (an empty line or Ctrl-D ends it):
  python -m llava.serve.cli --model-path liuhaotian/llava-v1.5-7b --image-file photo.jpg
"""


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--model-path", required=True, help="checkpoint folder (or hub id)")
    parser.add_argument("--model-base", default=None, help="base LLM for a projector-only or LoRA checkpoint")
    parser.add_argument("--image-file", required=True, help="the image to ask about")
    parser.add_argument("--query", default=None, help="one question; omit for an interactive session")
    parser.add_argument("--conv-mode", default="vicuna_v1", help="conversation template")
    parser.add_argument("--visual-token-num", type=int, default=None, help="K visual tokens kept (None: all)")
    parser.add_argument("--pruning-method", default="fastervlm", choices=METHOD_NAMES, metavar="METHOD",
                        help=f"how the K tokens are chosen: {', '.join(METHOD_NAMES)}")
    parser.add_argument("--pruning-args", default=None, help="the method's options as key=value,...")
    parser.add_argument("--temperature", type=float, default=0.0, help="sampling temperature; 0 is greedy")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer, in tokens")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto (cuda when available)")
    parser.add_argument("--torch-dtype", default="auto", choices=sorted(DTYPE_NAMES), help="weights' dtype")
    parser.add_argument("--vision-tower", default=None, help="local CLIP folder overriding mm_vision_tower")
    parser.add_argument("--vision-attn", default="sdpa", choices=["sdpa", "eager"],
                        help="the CLIP tower's attention (eager reproduces an eager tower bit for bit)")
    parser.add_argument("--allow-missing-weights", action="store_true",
                        help="load a checkpoint that lacks weights the model needs (they stay randomly initialised)")
    parser.add_argument("--save-kept-map", default=None, help="PNG showing the kept patches over the image")
    add_debug_arg(parser)
    return parser


def check_inputs(args: argparse.Namespace) -> None:
    """Refuse missing files and impossible values before torch is imported."""
    if not os.path.isfile(args.image_file):
        raise FileNotFoundError(f"image file {args.image_file} not found (check --image-file)")
    for flag, path in (("--model-path", args.model_path), ("--model-base", args.model_base),
                       ("--vision-tower", args.vision_tower)):
        if path and looks_local(path) and not os.path.exists(os.path.expanduser(path)):
            raise FileNotFoundError(f"{flag} {path} not found")
    if args.visual_token_num is not None and args.visual_token_num < 1:
        raise ValueError(f"--visual-token-num must be >= 1, got {args.visual_token_num}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.save_kept_map and not os.path.isdir(os.path.dirname(os.path.abspath(args.save_kept_map))):
        raise FileNotFoundError(f"--save-kept-map {args.save_kept_map}: its folder does not exist")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_inputs(args)

    import torch

    from llava.conversation import conv_templates
    from llava.mm_utils import load_image
    from llava.model.builder import load_pretrained_model
    from llava.pruning import parse_method_args

    if args.conv_mode not in conv_templates:
        raise ValueError(f"unknown --conv-mode {args.conv_mode!r}; available: {', '.join(sorted(conv_templates))}")
    method_args = parse_method_args(args.pruning_args, args.pruning_method)
    image = load_image(args.image_file)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path, args.model_base, None, device=args.device, torch_dtype=args.torch_dtype,
        visual_token_num=args.visual_token_num, pruning_method=args.pruning_method,
        pruning_args=method_args, vision_tower_path=args.vision_tower,
        vision_attn_implementation=args.vision_attn, allow_missing_weights=args.allow_missing_weights,
    )
    with torch.inference_mode():
        _chat(args, model, tokenizer, image_processor, image, conv_templates[args.conv_mode].copy())


def _chat(args, model, tokenizer, image_processor, image, conv) -> None:
    """Answer --query (or each interactive question), printing the visual-token count; save the map once."""
    from llava.kept_map import draw_kept_patches, model_view

    gen_kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0, use_cache=True)
    if args.temperature > 0:
        gen_kwargs["temperature"] = args.temperature
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
    run_main(main)
