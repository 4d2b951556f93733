"""Pictures of which patches a pruning method kept: kept patches bright, pruned ones dimmed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from PIL import Image, ImageDraw

if TYPE_CHECKING:
    import torch


def model_view(image: Image.Image, image_processor, image_aspect_ratio: str = "pad", size: int = 336) -> Image.Image:
    """The square the vision tower sees: padded to square (LLaVA-1.5 'pad') or resized and center-cropped."""
    from llava.mm_utils import expand2square

    image = image.convert("RGB")
    if image_aspect_ratio == "pad":
        mean = getattr(image_processor, "image_mean", (0.5, 0.5, 0.5))
        return expand2square(image, tuple(int(x * 255) for x in mean)).resize((size, size), Image.BICUBIC)
    scale = size / min(image.size)
    w, h = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    resized = image.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    return resized.crop((left, top, left + size, top + size))


def draw_kept_patches(
    view: Image.Image, kept: torch.Tensor | Sequence[int] | None, grid: int = 24, dim: float = 0.25, scale: int = 2
) -> Image.Image:
    """Overlay on a square `view`: patches not in `kept` (raster indices on a grid x grid) are dimmed."""
    side = view.width * scale
    canvas = view.resize((side, side), Image.NEAREST).convert("RGB")
    if kept is None:
        return canvas
    keep = set(int(i) for i in (kept.tolist() if hasattr(kept, "tolist") else kept))  # a tensor or a sequence
    step = side / grid
    shade = Image.new("L", canvas.size, 255)
    draw = ImageDraw.Draw(shade)
    for idx in range(grid * grid):
        if idx not in keep:
            r, c = divmod(idx, grid)
            draw.rectangle([c * step, r * step, (c + 1) * step - 1, (r + 1) * step - 1], fill=int(255 * dim))
    dark = Image.new("RGB", canvas.size, (0, 0, 0))
    return Image.composite(canvas, dark, shade)


def kept_grid(panels: Sequence[tuple[str, Image.Image]], columns: int = 4, pad: int = 8) -> Image.Image:
    """Lay titled panels out in a grid (titles drawn above each panel)."""
    if not panels:
        raise ValueError("no panels to draw")
    w, h = panels[0][1].size
    title_h = 18
    rows = (len(panels) + columns - 1) // columns
    cols = min(columns, len(panels))
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + title_h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, (title, panel) in enumerate(panels):
        r, c = divmod(n, columns)
        x, y = pad + c * (w + pad), pad + r * (h + title_h + pad)
        draw.text((x, y), title, fill=(0, 0, 0))
        sheet.paste(panel, (x, y + title_h))
    return sheet


def kept_indices_for(model, image_processor, image: Image.Image, k: int | None, method: str,
                     method_args: dict | None = None) -> torch.Tensor | None:
    """Raster indices that `method` keeps at budget `k` for one image (None when all are kept)."""
    from llava.mm_utils import process_images

    saved = (model.config.visual_token_num, model.config.pruning_method, model.config.pruning_args)
    try:
        model.set_pruning(k, method, method_args or {})
        pixels = process_images([image], image_processor, model.config)
        tower = model.get_vision_tower()
        encoded = model.encode_images(pixels.to(device=tower.device, dtype=tower.dtype))
        return encoded.kept_indices[0]
    finally:
        model.config.visual_token_num, model.config.pruning_method, model.config.pruning_args = saved


def main(argv: list[str] | None = None) -> None:
    """Draw a grid of kept-patch maps for one image over several budgets and methods."""
    import argparse
    import os

    from llava.cli_errors import add_debug_arg
    from llava.cli_help import METHOD_NAMES, HelpFormatter, check_method_names
    from llava.eval.cli_args import looks_local

    epilog = """example:
  python -m llava.kept_map --model-path liuhaotian/llava-v1.5-7b --image-file assets/samples/shapes.png \\
      --visual-token-num 576,144,58,29 --pruning-method fastervlm,random --out kept_patches.png
"""
    parser = argparse.ArgumentParser(description=main.__doc__, epilog=epilog, formatter_class=HelpFormatter)
    parser.add_argument("--model-path", required=True, help="checkpoint folder (or hub id)")
    parser.add_argument("--image-file", required=True, help="the image to draw")
    parser.add_argument("--visual-token-num", default="576,144,58,29", help="comma-separated budgets K")
    parser.add_argument("--pruning-method", default="fastervlm",
                        help=f"comma-separated method names, of: {', '.join(METHOD_NAMES)}")
    parser.add_argument("--out", default="kept_patches.png", help="the PNG to write")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--vision-tower", default=None, help="local CLIP folder overriding mm_vision_tower")
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    methods = check_method_names(args.pruning_method)
    budgets = _parse_budgets(args.visual_token_num)
    if not os.path.isfile(args.image_file):
        raise FileNotFoundError(f"image file {args.image_file} not found (check --image-file)")
    if looks_local(args.model_path) and not os.path.exists(os.path.expanduser(args.model_path)):
        raise FileNotFoundError(f"--model-path {args.model_path} not found")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FileNotFoundError(f"--out {args.out}: its folder does not exist")

    from llava.mm_utils import load_image
    from llava.model.builder import load_pretrained_model

    _, model, processor, _ = load_pretrained_model(args.model_path, device=args.device,
                                                   vision_tower_path=args.vision_tower)
    image = load_image(args.image_file)
    tower = model.get_vision_tower()
    view = model_view(image, processor, model.config.image_aspect_ratio, tower.config.image_size)
    panels = []
    for method in methods:
        for k in budgets:
            kept = kept_indices_for(model, processor, image, k, method)
            n = tower.num_patches if kept is None else len(kept)
            panels.append((f"{method} K={n}", draw_kept_patches(view, kept, tower.num_patches_per_side, scale=1)))
    kept_grid(panels, columns=len(budgets)).save(args.out)
    print(f"kept-patch grid written to {args.out}")


def _parse_budgets(text: str) -> list[int]:
    """`--visual-token-num 576,144,58`: positive integers, else a ValueError naming the flag."""
    try:
        budgets = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--visual-token-num {text!r}: expected comma-separated positive integers") from None
    if not budgets or min(budgets) < 1:
        raise ValueError(f"--visual-token-num {text!r}: expected comma-separated positive integers")
    return budgets


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
