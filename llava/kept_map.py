"""Pictures of which patches a pruning method kept: kept patches bright, pruned ones dimmed.

`python -m llava.kept_map` draws one panel per (method, K) with a legend (kept / dimmed / padding),
the pad-to-square bands hatched, and a red note when the checkpoint's weights are random (the tiny
model's config.json says `"random_weights": true`). Labels are at least 12 pt at the saved 96 dpi.
With `--video-file` (a Video-LLaVA checkpoint) it draws one strip per (method, K) instead: the sampled
frames side by side, each with its own kept patches (`draw_kept_strip`, `kept_frame_indices`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from PIL import Image, ImageDraw, ImageFont

if TYPE_CHECKING:
    import torch

DPI = 96  # written into the PNG; FONT_PX / DPI * 72 = 12 pt
FONT_PX = 16
HATCH = (255, 255, 255)
RANDOM_NOTE = ("random weights (the tiny test model): these kept patches exercise the pipeline, "
               "they do not show what a trained model attends to")


def _font(px: int = FONT_PX) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=px)


def weights_are_random(model_path: str) -> bool:
    """True for a checkpoint whose config.json carries the tiny builder's `"random_weights": true` marker."""
    from llava.model.tiny import RANDOM_MARKER

    path = Path(model_path) / "config.json"
    try:
        return bool(json.loads(path.read_text(encoding="utf-8")).get(RANDOM_MARKER, False))
    except (OSError, ValueError):
        return False


def pad_bands(image_size: tuple[int, int], image_aspect_ratio: str = "pad", size: int = 336) -> list[tuple]:
    """Boxes (x0, y0, x1, y1) of the `size` view that are padding, not image (LLaVA-1.5's 'pad' only)."""
    width, height = image_size
    if image_aspect_ratio != "pad" or width == height:
        return []
    side = max(width, height)
    scale = size / side
    if width < height:
        left = round((side - width) // 2 * scale)
        right = round(((side - width) // 2 + width) * scale)
        return [b for b in [(0, 0, left, size), (right, 0, size, size)] if b[2] > b[0]]
    top = round((side - height) // 2 * scale)
    bottom = round(((side - height) // 2 + height) * scale)
    return [b for b in [(0, 0, size, top), (0, bottom, size, size)] if b[3] > b[1]]


def _hatch(draw: ImageDraw.ImageDraw, box: tuple, step: int = 10) -> None:
    """Diagonal lines over `box` (its outline too), so padding reads as 'not image' in any colour."""
    x0, y0, x1, y1 = box
    for offset in range(-(y1 - y0), x1 - x0, step):
        # the line x - y = offset inside the box, clipped to it
        start = (x0 + max(offset, 0), y0 + max(-offset, 0))
        length = min(x1 - x0 - max(offset, 0), y1 - y0 - max(-offset, 0))
        if length > 0:
            draw.line([start, (start[0] + length, start[1] + length)], fill=HATCH, width=1)
    draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=HATCH, width=1)


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
    view: Image.Image, kept: torch.Tensor | Sequence[int] | None, grid: int = 24, dim: float = 0.25, scale: int = 2,
    bands: Sequence[tuple] = (),
) -> Image.Image:
    """Overlay on a square `view`: patches not in `kept` (raster indices on a grid x grid) are dimmed.

    `bands`: padding boxes in `view` coordinates (`pad_bands`), hatched on top.
    """
    side = view.width * scale
    canvas = view.resize((side, side), Image.NEAREST).convert("RGB")
    if kept is not None:
        keep = set(int(i) for i in (kept.tolist() if hasattr(kept, "tolist") else kept))
        step = side / grid
        shade = Image.new("L", canvas.size, 255)
        draw = ImageDraw.Draw(shade)
        for idx in range(grid * grid):
            if idx not in keep:
                r, c = divmod(idx, grid)
                draw.rectangle([c * step, r * step, (c + 1) * step - 1, (r + 1) * step - 1], fill=int(255 * dim))
        canvas = Image.composite(canvas, Image.new("RGB", canvas.size, (0, 0, 0)), shade)
    draw = ImageDraw.Draw(canvas)
    for box in bands:
        _hatch(draw, tuple(round(v * scale) for v in box))
    return canvas


PAD_LABEL = "padding to a square (LLaVA 'pad'; not image)"
NO_TOKEN_LABEL = "no visual token here (padding or cut away)"


def _legend(width: int, dim: float, font, pad_label: str = PAD_LABEL) -> Image.Image:
    """One row: a bright swatch 'kept', a dimmed one 'pruned (dimmed)', a hatched one 'padding'."""
    row_h = FONT_PX + 12
    legend = Image.new("RGB", (width, row_h), (255, 255, 255))
    draw = ImageDraw.Draw(legend)
    grey = (150, 150, 150)
    items = [("kept patch", grey), ("pruned patch (dimmed)", tuple(int(v * dim) for v in grey)),
             (pad_label, grey)]
    x = 0
    for n, (label, colour) in enumerate(items):
        box = (x, 4, x + row_h - 8, row_h - 4)
        draw.rectangle(box, fill=colour, outline=(0, 0, 0))
        if n == 2:
            _hatch(draw, (box[0] + 1, box[1] + 1, box[2], box[3]), step=5)
        draw.text((box[2] + 6, 4), label, fill=(0, 0, 0), font=font)
        x = box[2] + 6 + int(draw.textlength(label, font=font)) + 24
    return legend


def kept_grid(panels: Sequence[tuple[str, Image.Image]], columns: int = 4, pad: int = 8,
              title: str | None = None, notes: Sequence[str] = (), legend: bool = True,
              dim: float = 0.25) -> Image.Image:
    """Lay titled panels out in a grid: an optional title and red notes on top, a legend at the bottom."""
    if not panels:
        raise ValueError("no panels to draw")
    font = _font()
    w, h = panels[0][1].size
    line_h = FONT_PX + 8
    rows = (len(panels) + columns - 1) // columns
    cols = min(columns, len(panels))
    width = cols * (w + pad) + pad
    header = [(title, (0, 0, 0))] if title else []
    header += [(note, (200, 0, 0)) for note in notes]
    top = pad + line_h * len(header)
    legend_img = _legend(width - 2 * pad, dim, font) if legend else None
    height = top + rows * (h + line_h + pad) + (legend_img.height + pad if legend_img else 0) + pad
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, (text, colour) in enumerate(header):
        draw.text((pad, pad + n * line_h), text, fill=colour, font=font)
    for n, (label, panel) in enumerate(panels):
        r, c = divmod(n, columns)
        x, y = pad + c * (w + pad), top + r * (h + line_h + pad)
        draw.text((x, y), label, fill=(0, 0, 0), font=font)
        sheet.paste(panel, (x, y + line_h))
    if legend_img:
        sheet.paste(legend_img, (pad, top + rows * (h + line_h + pad)))
    return sheet


def draw_panel(panel, kept: Sequence[int] | None, dim: float = 0.25, height: int | None = None) -> Image.Image:
    """A family panel (`llava.analysis.family_grids.Panel`) with the candidates not in `kept` dimmed.

    Areas no candidate covers (the padding an unpadded grid drops) and the panel's padding bands are
    hatched. height: resize the result to this height (nearest neighbour, so cells stay sharp).
    """
    canvas = panel.image.convert("RGB")
    keep = None if kept is None else set(int(i) for i in kept)
    shade = Image.new("L", canvas.size, 255)
    covered = Image.new("L", canvas.size, 0)
    draw_shade, draw_cover = ImageDraw.Draw(shade), ImageDraw.Draw(covered)
    for cid, (x0, y0, x1, y1) in zip(panel.ids.tolist(), panel.boxes.tolist()):
        box = [round(x0), round(y0), round(x1) - 1, round(y1) - 1]
        draw_cover.rectangle(box, fill=255)
        if keep is not None and cid not in keep:
            draw_shade.rectangle(box, fill=int(255 * dim))
    canvas = Image.composite(canvas, Image.new("RGB", canvas.size, (0, 0, 0)), shade)
    hatched = canvas.copy()
    _hatch(ImageDraw.Draw(hatched), (0, 0, canvas.width, canvas.height))
    canvas = Image.composite(canvas, hatched, covered)  # hatch where no token is
    draw = ImageDraw.Draw(canvas)
    for box in panel.bands:
        _hatch(draw, tuple(round(v) for v in box))
    if height is not None and height != canvas.height:
        canvas = canvas.resize((max(1, round(canvas.width * height / canvas.height)), height), Image.NEAREST)
    return canvas


def family_sheet(rows: Sequence[tuple[str, Sequence[tuple[str, Image.Image]]]], title: str | None = None,
                 notes: Sequence[str] = (), pad: int = 8, dim: float = 0.25) -> Image.Image:
    """Rows of (label, [(panel title, panel image)]): a label line, then the row's panels side by side."""
    if not rows:
        raise ValueError("no rows to draw")
    font = _font()
    line_h = FONT_PX + 8
    header = ([(title, (0, 0, 0))] if title else []) + [(note, (200, 0, 0)) for note in notes]
    row_w = [sum(im.width + pad for _, im in panels) + pad for _, panels in rows]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = [int(probe.textlength(t, font=font)) + 2 * pad for t, _ in header]
    width = max(row_w + text_w)
    legend = _legend(width - 2 * pad, dim, font, NO_TOKEN_LABEL)
    heights = [2 * line_h + max(im.height for _, im in panels) + pad for _, panels in rows]
    top = pad + line_h * len(header)
    sheet = Image.new("RGB", (width, top + sum(heights) + legend.height + 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for n, (text, colour) in enumerate(header):
        draw.text((pad, pad + n * line_h), text, fill=colour, font=font)
    y = top
    for (label, panels), h in zip(rows, heights):
        draw.text((pad, y), label, fill=(0, 0, 0), font=font)
        x = pad
        for panel_title, im in panels:
            draw.text((x, y + line_h), panel_title, fill=(60, 60, 60), font=font)
            sheet.paste(im, (x, y + 2 * line_h))
            x += im.width + pad
        y += h
    sheet.paste(legend, (pad, y + pad))
    return sheet


def kept_indices_for(model, image_processor, image: Image.Image, k: int | None, method: str,
                     method_args: dict | None = None) -> torch.Tensor | None:
    """Raster indices that `method` keeps at budget `k` for one image (None when all are kept)."""
    from llava.mm_utils import process_images
    from llava.pruning import PruningConfig

    pruning = PruningConfig(method, k, method_args=method_args or {})
    pixels = process_images([image], image_processor, model.config, pruning.anyres_mode)
    tower = model.get_vision_tower()
    encoded = model.encode_images(pixels.to(device=tower.device, dtype=tower.dtype), pruning=pruning)
    return encoded.kept_indices[0]


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
  python -m llava.kept_map --families all --image-file assets/samples/shapes.png --visual-token-num 64 \\
      --out docs/kept_patches_families.png   # tiny checkpoints built on the fly
"""
    parser = argparse.ArgumentParser(description=main.__doc__, epilog=epilog, formatter_class=HelpFormatter)
    parser.add_argument("--model-path", default=None, help="checkpoint folder (or hub id); not with --families")
    parser.add_argument("--image-file", default=None, help="the image to draw")
    add_video_args(parser)
    parser.add_argument("--visual-token-num", default=None,
                        help="comma-separated budgets K (default 576,144,58,29; with --families 64)")
    parser.add_argument("--families", default=None,
                        help="draw the image on these families side by side (comma-separated, or 'all': "
                             "the registered ones in llava/analysis/family_grids.py), each on its own token grid")
    parser.add_argument("--family-model", action="append", default=[], metavar="FAMILY=PATH",
                        help="with --families: the checkpoint of FAMILY (default: a tiny one built on the fly)")
    parser.add_argument("--pruning-method", default="fastervlm",
                        help=f"comma-separated method names, of: {', '.join(METHOD_NAMES)}")
    parser.add_argument("--out", default="kept_patches.png", help="the PNG to write")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, or auto")
    parser.add_argument("--vision-tower", default=None, help="local CLIP folder overriding mm_vision_tower")
    parser.add_argument("--vision-attn", default="sdpa", choices=["sdpa", "eager"],
                        help="the CLIP tower's attention (eager reproduces an eager tower bit for bit)")
    parser.add_argument("--allow-missing-weights", action="store_true",
                        help="load a checkpoint that lacks weights the model needs (they stay randomly initialised)")
    add_debug_arg(parser)
    args = parser.parse_args(argv)
    if args.visual_token_num is None:
        args.visual_token_num = "64" if args.families else "576,144,58,29"
    if args.video_file or not args.image_file:
        if args.families:
            parser.error("--families draws an image: give --image-file, not --video-file")
        if not args.model_path:
            parser.error("--model-path is required with --video-file")
        return video_main(args)
    methods = check_method_names(args.pruning_method)
    budgets = _parse_budgets(args.visual_token_num)
    if not os.path.isfile(args.image_file):
        raise FileNotFoundError(f"image file {args.image_file} not found (check --image-file)")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FileNotFoundError(f"--out {args.out}: its folder does not exist")
    if args.families:
        if args.model_path:
            parser.error("--model-path and --families exclude each other (use --family-model FAMILY=PATH)")
        return draw_families(args.families, dict(_parse_family_models(args.family_model)), args.image_file,
                             methods, budgets, args.out, args.device)
    if not args.model_path:
        parser.error("--model-path is required (or --families)")
    if looks_local(args.model_path) and not os.path.exists(os.path.expanduser(args.model_path)):
        raise FileNotFoundError(f"--model-path {args.model_path} not found")

    from llava.mm_utils import load_image
    from llava.model.builder import load_pretrained_model

    image = load_image(args.image_file)
    _, model, processor, _ = load_pretrained_model(args.model_path, device=args.device,
                                                   vision_tower_path=args.vision_tower,
                                                   vision_attn_implementation=args.vision_attn,
                                                   allow_missing_weights=args.allow_missing_weights)
    tower = model.get_vision_tower()
    aspect, size = model.config.image_aspect_ratio, tower.config.image_size
    view = model_view(image, processor, aspect, size)
    bands = pad_bands(image.size, aspect, size)
    panels = []
    for method in methods:
        for k in budgets:
            kept = kept_indices_for(model, processor, image, k, method)
            n = tower.num_patches if kept is None else len(kept)
            label = f"{method}  K={n}" + ("  (all kept)" if kept is None else "")
            panels.append((label, draw_kept_patches(view, kept, tower.num_patches_per_side, scale=1, bands=bands)))
    notes = [RANDOM_NOTE] if weights_are_random(args.model_path) else []
    title = f"{Path(args.image_file).name}  ({image.width}x{image.height})  on  {Path(args.model_path.rstrip('/')).name}"
    sheet = kept_grid(panels, columns=len(budgets), title=title, notes=notes)
    sheet.save(args.out, dpi=(DPI, DPI))
    print(f"kept-patch grid written to {args.out}" + (" (random weights: see the note in the picture)" if notes else ""))


def _parse_family_models(items: Sequence[str]) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"--family-model {item!r}: expected FAMILY=PATH (e.g. llava-onevision=/ckpt/ov-7b)")
        if not Path(path.strip()).expanduser().is_dir():
            raise FileNotFoundError(f"--family-model {item!r}: folder {path.strip()} not found")
        out.append((name.strip(), path.strip()))
    return out


def family_rows(families: Sequence[str], paths: dict[str, str], image: Image.Image, methods: Sequence[str],
                budgets: Sequence[int], work_dir: Path, device: str = "cpu", height: int = 240):
    """(rows for `family_sheet`, whether any weights are random): one row per (family, method, K)."""
    from llava.analysis.family_grids import get_grid_family, load
    from llava.pruning import PruningConfig

    rows, random = [], False
    for name in families:
        family = get_grid_family(name)
        path = paths.get(name) or family.tiny(work_dir / name)
        found, loaded = load(path, device)
        if found.name != name:
            raise ValueError(f"--family-model {name}={path}: the checkpoint is a {found.name!r} model")
        random = random or weights_are_random(path)
        panels = family.grid(loaded, image)
        total = sum(len(p.ids) for p in panels)
        for method in methods:
            for k in budgets:
                kept = family.kept(loaded, image, PruningConfig(method, k))
                shown = total if kept is None else sum(int(i in set(kept)) for p in panels for i in p.ids.tolist())
                label = f"{name}  ({Path(path).name}):  {method}, K={k}: {shown} of {total} tokens kept"
                rows.append((label, [(p.title, draw_panel(p, kept, height=height)) for p in panels]))
    return rows, random


def draw_families(families: str, paths: dict[str, str], image_file: str, methods: Sequence[str],
                  budgets: Sequence[int], out: str, device: str = "cpu") -> None:
    """One image on every chosen family's own grid, side by side, into one PNG."""
    import tempfile

    from llava.analysis.family_grids import get_grid_family, list_grid_families
    from llava.mm_utils import load_image

    names = list_grid_families() if families == "all" else [f.strip() for f in families.split(",") if f.strip()]
    for name in list(names) + list(paths):
        get_grid_family(name)  # unknown names fail before anything is built
    image = load_image(image_file)
    with tempfile.TemporaryDirectory() as tmp:
        rows, random = family_rows(names, paths, image, methods, budgets, Path(tmp), device)
    notes = [RANDOM_NOTE] if random else []
    title = f"{Path(image_file).name} ({image.width}x{image.height}): kept visual tokens on each family's own grid"
    family_sheet(rows, title=title, notes=notes).save(out, dpi=(DPI, DPI))
    print(f"kept-patch pictures of {len(names)} families written to {out}")


def _parse_budgets(text: str) -> list[int]:
    """`--visual-token-num 576,144,58`: positive integers, else a ValueError naming the flag."""
    try:
        budgets = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--visual-token-num {text!r}: expected comma-separated positive integers") from None
    if not budgets or min(budgets) < 1:
        raise ValueError(f"--visual-token-num {text!r}: expected comma-separated positive integers")
    return budgets


# ---- videos: the kept patches of every frame, as a strip --------------------------------------
def draw_kept_strip(views: Sequence[Image.Image], kept: Sequence[torch.Tensor | Sequence[int] | None], grid: int,
                    dim: float = 0.25, scale: int = 1, gap: int = 4) -> Image.Image:
    """Frames side by side in time order, each with its pruned patches dimmed (`draw_kept_patches`).

    views: T square frames as the tower sees them; kept: per frame its raster indices on a grid x grid
    (None: all kept). Frame f starts at x = f * (side + gap), side = view width x scale.
    """
    if len(views) != len(kept):
        raise ValueError(f"{len(views)} frames but kept indices for {len(kept)}")
    panels = [draw_kept_patches(v, k, grid, dim=dim, scale=scale) for v, k in zip(views, kept)]
    side = panels[0].width
    strip = Image.new("RGB", (len(panels) * side + (len(panels) - 1) * gap, side), (255, 255, 255))
    for f, panel in enumerate(panels):
        strip.paste(panel, (f * (side + gap), 0))
    return strip


def split_per_frame(kept: torch.Tensor | None, frames: int, num_patches: int) -> list[list[int] | None]:
    """A video's kept indices as one list per frame: [T, M] per-frame raster indices ('frame' mode) or a
    flat [T x K] of f * N + p ('temporal' mode); None (unpruned) gives None for every frame."""
    if kept is None:
        return [None] * frames
    if kept.ndim == 2:
        return [row.tolist() for row in kept]
    per_frame: list[list[int]] = [[] for _ in range(frames)]
    for i in kept.tolist():
        per_frame[i // num_patches].append(i % num_patches)
    return per_frame


def kept_frame_indices(model, video: torch.Tensor, k: int | None, method: str, video_mode: str = "frame",
                       method_args: dict | None = None) -> list[list[int] | None]:
    """Per frame, the raster indices `method` keeps at K per frame for one video [T, 3, S, S]."""
    from llava.pruning import PruningConfig

    pruning = PruningConfig(method, k, method_args=method_args or {}, video_mode=video_mode)
    tower = model.get_video_tower()
    encoded = model.encode_videos(video[None].to(device=tower.device, dtype=tower.dtype), pruning=pruning)
    return split_per_frame(encoded.kept_indices[0], video.shape[0], tower.num_patches)


def add_video_args(parser) -> None:
    """The video flags of `python -m llava.kept_map` (a Video-LLaVA checkpoint and `--video-file`)."""
    parser.add_argument("--video-file", default=None,
                        help="a video to draw instead of an image (Video-LLaVA): one strip of frames per (method, K)")
    parser.add_argument("--num-frames", type=int, default=8, help="frames sampled uniformly from --video-file")
    parser.add_argument("--video-mode", default="frame", choices=["frame", "temporal"],
                        help="K per frame (frame), or T x K chosen over all frames (temporal)")


def video_main(args) -> None:
    """`python -m llava.kept_map --video-file ...`: one strip of the sampled frames per (method, K)."""
    import os

    from llava.cli_help import check_method_names
    from llava.eval.cli_args import looks_local

    if bool(args.video_file) == bool(args.image_file):
        raise ValueError("give one of --image-file (a picture) or --video-file (a video, with a Video-LLaVA model)")
    methods = check_method_names(args.pruning_method)
    budgets = _parse_budgets(args.visual_token_num)
    if not os.path.isfile(args.video_file):
        raise FileNotFoundError(f"video file {args.video_file} not found (check --video-file)")
    if looks_local(args.model_path) and not os.path.exists(os.path.expanduser(args.model_path)):
        raise FileNotFoundError(f"--model-path {args.model_path} not found")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FileNotFoundError(f"--out {args.out}: its folder does not exist")

    from llava.model.builder import load_pretrained_model
    from llava.video_io import preprocess_frames, read_video_frames

    _, model, _, _ = load_pretrained_model(args.model_path, device=args.device,
                                           vision_attn_implementation=args.vision_attn,
                                           allow_missing_weights=args.allow_missing_weights)
    if getattr(model, "get_video_tower", None) is None or model.get_video_tower() is None:
        raise ValueError(f"--video-file needs a video model (Video-LLaVA); {args.model_path} has no video tower")
    frames = read_video_frames(args.video_file, args.num_frames)
    video = preprocess_frames(frames, model.video_processor)  # [T, 3, S, S]
    tower = model.get_video_tower()
    views = [model_view(f, model.video_processor, "crop", tower.config.image_size) for f in frames]
    panels = []
    for method in methods:
        for k in budgets:
            kept = kept_frame_indices(model, video, k, method, args.video_mode)
            per_frame = [tower.num_patches if x is None else len(x) for x in kept]
            label = (f"{method}  K={min(k, tower.num_patches)} per frame, {sum(per_frame)} video tokens"
                     if args.video_mode == "frame" else f"{method}  {sum(per_frame)} tokens over all frames "
                     f"(per frame {','.join(map(str, per_frame))})")
            panels.append((label, draw_kept_strip(views, kept, tower.num_patches_per_side)))
    notes = [RANDOM_NOTE] if weights_are_random(args.model_path) else []
    title = (f"{Path(args.video_file).name}: {len(frames)} frames left to right, kept patches bright, pruned dimmed,"
             f"  on  {Path(args.model_path.rstrip('/')).name}")
    sheet = kept_grid(panels, columns=1, title=title, notes=notes, legend=False)
    sheet.save(args.out, dpi=(DPI, DPI))
    note = " (random weights: see the note in the picture)" if notes else ""
    print(f"kept-patch strips written to {args.out}{note}")


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
