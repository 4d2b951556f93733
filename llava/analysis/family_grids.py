"""Where each model family's visual tokens sit on the image: one registration per family.

A family registers (`@register_grid_family`) how to recognise its checkpoints, how to build a tiny
one, and three functions over a loaded model and one image:
  - `grid`: the panels the family's tokens cover. A panel is a picture at the model's resolution
    (the padded square, a base view, the resized anyres canvas, Qwen's resized image) plus one box
    per candidate token, keyed by the candidate's id;
  - `kept`: the ids a PruningConfig keeps (None: all), in the same numbering as `grid`'s boxes;
  - `signal_scores`: the vision signals of the views the dispersion analysis describes, [V, N] each.
The kept-patch pictures (`llava.kept_map --families`) and the signal-dispersion analysis
(`llava.analysis.signal_dispersion`) read only this registry, so a family joins both with one
registration. Built in: LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision, Qwen2.5-VL and Qwen3-VL (on
`merged_grid_panel`: each token a 2 x 2 block of patches, 28 px for Qwen2.5-VL, 32 px for Qwen3-VL).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in the panel's pixels (x1, y1 exclusive)


@dataclass
class Panel:
    """One picture and the candidates drawn on it: ids[m] covers boxes[m] (the rest is no token)."""

    title: str
    image: Image.Image
    ids: np.ndarray  # [M] int candidate ids
    boxes: np.ndarray  # [M, 4] float (x0, y0, x1, y1)
    bands: list[Box] = field(default_factory=list)  # padding boxes (image area that is not the image)


@dataclass
class Loaded:
    """A loaded checkpoint, as the hooks read it."""

    model: Any
    processor: Any
    raw: dict  # its config.json
    path: str


@dataclass(frozen=True)
class GridFamily:
    name: str
    matches: Callable[[dict], bool]
    tiny: Callable[[Path], str]
    grid: Callable[[Loaded, Image.Image], list[Panel]]
    kept: Callable[[Loaded, Image.Image, Any], Any]
    signal_scores: Callable[[Loaded, Image.Image, Sequence[str]], dict] | None
    has_cls: bool
    description: str


_GRIDS: dict[str, GridFamily] = {}


def register_grid_family(name: str, *, matches: Callable[[dict], bool], tiny: Callable[[Path], str],
                         kept: Callable, signal_scores: Callable | None = None, has_cls: bool = False,
                         description: str = "") -> Callable:
    """Decorator registering `grid(loaded, image) -> [Panel]` for family `name` (first match wins)."""

    def wrap(grid: Callable) -> Callable:
        if name in _GRIDS:
            raise ValueError(f"grid family {name!r} is registered twice")
        _GRIDS[name] = GridFamily(name, matches, tiny, grid, kept, signal_scores, has_cls,
                                  description or (grid.__doc__ or "").strip().split("\n")[0])
        return grid

    return wrap


def list_grid_families() -> list[str]:
    return list(_GRIDS)


def get_grid_family(name: str) -> GridFamily:
    try:
        return _GRIDS[name]
    except KeyError:
        raise ValueError(f"unknown family {name!r} for kept-patch pictures; known: {', '.join(_GRIDS)}") from None


def grid_family_of(raw: dict, path: str = "") -> GridFamily:
    for family in _GRIDS.values():
        if family.matches(raw):
            return family
    raise ValueError(f"{path}: no kept-patch grid is registered for model_type={raw.get('model_type')!r} "
                     f"(known families: {', '.join(_GRIDS)}); register one in llava/analysis/family_grids.py")


def load(path: str, device: str = "cpu") -> tuple[GridFamily, Loaded]:
    """Load a checkpoint folder unpruned and find its grid family."""
    from llava.model.builder import load_pretrained_model

    raw = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    family = grid_family_of(raw, path)
    _, model, processor, _ = load_pretrained_model(path, device=device)
    return family, Loaded(model.eval(), processor, raw, str(path))


# ---- geometry helpers -------------------------------------------------------------------------------


def raster_cells(rows: int, cols: int, cell_w: float, cell_h: float, x0: float = 0.0, y0: float = 0.0,
                 first_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ids [rows*cols] and boxes [rows*cols, 4] of a raster grid of cells starting at (x0, y0)."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    boxes = np.stack([x0 + c * cell_w, y0 + r * cell_h, x0 + (c + 1) * cell_w, y0 + (r + 1) * cell_h], axis=1)
    return first_id + np.arange(rows * cols), boxes.astype(np.float64)


def merged_grid_panel(image: Image.Image, grid_h: int, grid_w: int, patch: int, merge: int = 2,
                      title: str = "merged grid") -> Panel:
    """Qwen-style: `image` resized to (grid_w * patch, grid_h * patch); token i is the merge x merge block
    of patches at raster position i of the (grid_h / merge) x (grid_w / merge) merged grid."""
    if grid_h % merge or grid_w % merge:
        raise ValueError(f"a {grid_h}x{grid_w} patch grid does not split into {merge}x{merge} merge groups")
    view = image.convert("RGB").resize((grid_w * patch, grid_h * patch), Image.BICUBIC)
    ids, boxes = raster_cells(grid_h // merge, grid_w // merge, patch * merge, patch * merge)
    return Panel(f"{title} ({grid_h // merge}x{grid_w // merge}, {patch * merge} px)", view, ids, boxes)


def _kept_list(kept) -> Any:
    return None if kept is None else kept.tolist() if hasattr(kept, "tolist") else list(kept)


def _tower_scores(tower, pixels, names: Sequence[str]) -> dict:
    """{name: [V, N]} of the tower's signals for the views `pixels` [V, 3, S, S]."""
    import torch

    with torch.no_grad():
        sig = tower(pixels.to(device=tower.device, dtype=tower.dtype), needs=frozenset(names))
    return {n: getattr(sig, n).float().cpu() for n in names}


# ---- LLaVA-1.5 ---------------------------------------------------------------------------------------


def _model_family(raw: dict) -> str | None:
    """The model registry's family of a config.json (its first match, as the loader decides)."""
    from llava.model.families import family_of

    try:
        return family_of(raw, "").name
    except ValueError:
        return None


def _is_llava(raw: dict) -> bool:
    return _model_family(raw) in ("llava", "llava-hf")


def _is_next(raw: dict) -> bool:
    return _is_llava(raw) and (raw.get("image_aspect_ratio") == "anyres" or raw.get("model_type") == "llava_next")


def _tiny_15(out: Path) -> str:
    from llava.model.tiny import save_tiny_checkpoint

    return str(save_tiny_checkpoint(out))


def _kept_15(loaded: Loaded, image: Image.Image, pruning) -> Any:
    from llava.mm_utils import process_images

    model = loaded.model
    tower = model.get_vision_tower()
    pixels = process_images([image], loaded.processor, model.config, pruning.anyres_mode)
    encoded = model.encode_images(pixels.to(device=tower.device, dtype=tower.dtype), pruning=pruning)
    return _kept_list(encoded.kept_indices[0])


def _scores_15(loaded: Loaded, image: Image.Image, names: Sequence[str]) -> dict:
    from llava.mm_utils import process_images

    pixels = process_images([image], loaded.processor, loaded.model.config)  # [1, 3, S, S]
    return _tower_scores(loaded.model.get_vision_tower(), pixels, names)


def _is_15(raw: dict) -> bool:
    return _is_llava(raw) and not _is_next(raw)


@register_grid_family("llava-1.5", matches=_is_15, tiny=_tiny_15, kept=_kept_15, signal_scores=_scores_15,
                      has_cls=True)
def grid_15(loaded: Loaded, image: Image.Image) -> list[Panel]:
    """LLaVA-1.5: the padded (or centre-cropped) square at 336 px, 24 x 24 patches of 14 px."""
    from llava.kept_map import model_view, pad_bands

    model = loaded.model
    tower = model.get_vision_tower()
    aspect, size, side = model.config.image_aspect_ratio, tower.config.image_size, tower.num_patches_per_side
    ids, boxes = raster_cells(side, side, size / side, size / side)
    view = model_view(image, loaded.processor, aspect, size)
    return [Panel(f"{side}x{side} patches", view, ids, boxes, pad_bands(image.size, aspect, size))]


# ---- LLaVA-NeXT ----------------------------------------------------------------------------------------


def _tiny_next(out: Path) -> str:
    from llava.model.tiny import save_tiny_next_checkpoint

    return str(save_tiny_next_checkpoint(out))


def next_layout(model, image_size: tuple[int, int], anyres_mode: str = "faithful"):
    """(TokenLayout, (cols, rows), best resolution (w, h)) of one NeXT image of (width, height)."""
    from llava.anyres import anyres_pinpoints, select_best_resolution, token_layout

    merge = getattr(model.config, "mm_patch_merge_type", "flat")
    if merge == "flat" and anyres_mode != "paper":
        raise ValueError("kept-patch pictures of LLaVA-NeXT need mm_patch_merge_type 'spatial' or 'spatial_unpad' "
                         f"(this checkpoint uses {merge!r})")
    tower = model.get_vision_tower()
    crop, side = tower.config.image_size, tower.num_patches_per_side
    pinpoints = anyres_pinpoints(model.config, crop, anyres_mode)
    best = select_best_resolution(image_size, pinpoints)
    cols, rows = best[0] // crop, best[1] // crop
    unpad = "unpad" in merge and anyres_mode != "paper"
    return token_layout(cols * rows, side, (cols, rows), image_size, unpad, unpad), (cols, rows), best


def _kept_next(loaded: Loaded, image: Image.Image, pruning) -> Any:
    from llava.mm_utils import process_images

    model = loaded.model
    tower = model.get_vision_tower()
    views = process_images([image], loaded.processor, model.config, pruning.anyres_mode)[0]  # [V, 3, S, S]
    encoded = model.encode_anyres_images(views.to(device=tower.device, dtype=tower.dtype), [image.size],
                                         pruning=pruning)
    return _kept_list(encoded.kept_indices[0])  # layout slots (newline slots have no box)


def _scores_next(loaded: Loaded, image: Image.Image, names: Sequence[str]) -> dict:
    from llava.mm_utils import process_images

    views = process_images([image], loaded.processor, loaded.model.config)[0]
    return _tower_scores(loaded.model.get_vision_tower(), views[:1], names)  # the base view


@register_grid_family("llava-next", matches=_is_next, tiny=_tiny_next, kept=_kept_next, signal_scores=_scores_next,
                      has_cls=True)
def grid_next(loaded: Loaded, image: Image.Image, anyres_mode: str = "faithful") -> list[Panel]:
    """LLaVA-NeXT: the base view (squashed to 336 px) and the anyres canvas of 336 px crops (unpadded)."""
    import torch

    from llava.anyres import NEWLINE, resize_and_pad

    model = loaded.model
    tower = model.get_vision_tower()
    crop, side = tower.config.image_size, tower.num_patches_per_side
    layout, (cols, _), best = next_layout(model, image.size, anyres_mode)
    step = crop / side
    slot = torch.arange(len(layout))
    base = (layout.crop == 0).numpy()
    grid = ((layout.crop != NEWLINE) & (layout.crop > 0)).numpy()
    pr, pc = np.divmod(layout.patch.numpy(), side)
    cr, cc = np.divmod(layout.crop.numpy() - 1, cols)
    base_boxes = np.stack([pc * step, pr * step, (pc + 1) * step, (pr + 1) * step], axis=1)[base]
    x0, y0 = cc * crop + pc * step, cr * crop + pr * step
    grid_boxes = np.stack([x0, y0, x0 + step, y0 + step], axis=1)[grid]
    image = image.convert("RGB")
    return [Panel(f"base view ({side}x{side})", image.resize((crop, crop), Image.BICUBIC), slot.numpy()[base],
                  base_boxes.astype(np.float64)),
            Panel(f"anyres grid {best[0]}x{best[1]}", resize_and_pad(image, best), slot.numpy()[grid],
                  grid_boxes.astype(np.float64))]


# ---- LLaVA-OneVision ----------------------------------------------------------------------------------------


def _is_onevision(raw: dict) -> bool:
    return _model_family(raw) == "llava-onevision"


def _tiny_onevision(out: Path) -> str:
    from llava.model.family_onevision import save_tiny_onevision

    return str(save_tiny_onevision(out / "llava-onevision-tiny"))


def _onevision_pixels(loaded: Loaded, image: Image.Image):
    """(pixel_values [1, P, 3, S, S], image_sizes [[h, w]]) from the checkpoint's own image processor."""
    processor = getattr(loaded.processor, "image_processor", loaded.processor)
    out = processor(images=[image.convert("RGB")], return_tensors="pt")
    return out["pixel_values"], out["image_sizes"]


def _kept_onevision(loaded: Loaded, image: Image.Image, pruning) -> Any:
    from llava.model.onevision import OneVisionGeometry, encode_onevision

    pixels, sizes = _onevision_pixels(loaded, image)
    encoded = encode_onevision(loaded.model, pixels, sizes, OneVisionGeometry.from_config(loaded.raw), pruning=pruning)
    return _kept_list(encoded.kept_indices[0])  # candidates: base view, then the (down-sampled) grid


def _scores_onevision(loaded: Loaded, image: Image.Image, names: Sequence[str]) -> dict:
    pixels, _ = _onevision_pixels(loaded, image)
    return _tower_scores(loaded.model.get_vision_tower(), pixels[0, :1], names)  # the base view


@register_grid_family("llava-onevision", matches=_is_onevision, tiny=_tiny_onevision, kept=_kept_onevision,
                      signal_scores=_scores_onevision, has_cls=False)
def grid_onevision(loaded: Loaded, image: Image.Image) -> list[Panel]:
    """LLaVA-OneVision: the base view (squashed to 384 px, 27 x 27) and the anyres_max grid over the padded canvas.

    Grid tokens are the crops' patches merged, cut to the image and bilinearly down-sampled when the
    layout says so: token (i, j) of the out_h x out_w grid covers the cut region's cell (i, j). A SigLIP
    patch is drawn as crop / 27 px (14.2 px; the conv reads 27 x 14 = 378 of the 384 px).
    """
    from llava.anyres import resize_and_pad, select_best_resolution
    from llava.model.onevision import OneVisionGeometry, image_grid

    geometry = OneVisionGeometry.from_config(loaded.raw)
    image = image.convert("RGB")
    g = image_grid((image.height, image.width), geometry)
    crop, side = geometry.crop, geometry.side
    px = crop / side
    ids, boxes = raster_cells(side, side, px, px)
    base = Panel(f"base view ({side}x{side})", image.resize((crop, crop), Image.BICUBIC), ids, boxes)
    best = select_best_resolution((image.width, image.height), [(w, h) for h, w in geometry.pinpoints])
    h, w = g.cut_rows.stop - g.cut_rows.start, g.cut_cols.stop - g.cut_cols.start
    gids, gboxes = raster_cells(g.out_h, g.out_w, w / g.out_w * px, h / g.out_h * px, g.cut_cols.start * px,
                                g.cut_rows.start * px, first_id=side * side)
    down = "" if not g.downsampled else f", down-sampled from {h}x{w}"
    grid = Panel(f"grid {g.rows}x{g.cols} crops -> {g.out_h}x{g.out_w} tokens{down}", resize_and_pad(image, best),
                 gids, gboxes)
    return [base, grid]


# ---- Qwen2.5-VL and Qwen3-VL: the merged grid over the resized image ------------------------------------------


def _qwen_pixels(loaded: Loaded, image: Image.Image):
    """(pixel_values [P, C*T*p*p], image_grid_thw [1, 3]) from the checkpoint's own image processor."""
    processor = getattr(loaded.processor, "image_processor", loaded.processor)
    out = processor(images=[image.convert("RGB")], return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def _qwen_grid(loaded: Loaded, image: Image.Image) -> list[Panel]:
    """The image resized as the processor does (grid h x w patches), one cell per merged token."""
    vision = loaded.raw["vision_config"]
    _, thw = _qwen_pixels(loaded, image)
    t, h, w = (int(v) for v in thw[0])
    return [merged_grid_panel(image, h, w, int(vision["patch_size"]), int(vision.get("spatial_merge_size", 2)))]


def _qwen_kept(loaded: Loaded, image: Image.Image, pruning) -> Any:
    pixels, thw = _qwen_pixels(loaded, image)
    encoded = loaded.model.encode_images(pixels, thw, pruning=pruning)
    encoded = encoded[0] if isinstance(encoded, tuple) else encoded  # Qwen3-VL adds its DeepStack features
    return _kept_list(encoded.kept_indices[0])  # raster order of the merged grid


def _qwen_scores(tower_signals: Sequence[str]) -> Callable:
    """signal_scores of a Qwen family whose adapter computes `tower_signals` (per merged token); others are skipped."""

    def scores(loaded: Loaded, image: Image.Image, names: Sequence[str]) -> dict:
        import torch

        asked = [n for n in names if n in tower_signals]
        pixels, thw = _qwen_pixels(loaded, image)
        with torch.no_grad():
            out = loaded.model.vision_signals(pixels, thw, needs=frozenset(asked))
        images = out.signals if hasattr(out, "signals") else [img.signals for img in out]
        return {n: getattr(images[0], n).float().cpu() for n in asked}  # [1, M] each

    return scores


def _family_detect(name: str) -> Callable[[dict], bool]:
    return lambda raw: _model_family(raw) == name


def _family_tiny(name: str) -> Callable[[Path], str]:
    def tiny(out: Path) -> str:
        from llava.model.families import get_family

        return str(get_family(name).tiny(out))

    return tiny


register_grid_family("qwen2.5-vl", matches=_family_detect("qwen2_5_vl"), tiny=_family_tiny("qwen2_5_vl"),
                     kept=_qwen_kept, signal_scores=_qwen_scores(("mean_attn",)), has_cls=False,
                     description="Qwen2.5-VL: 2 x 2 merged groups of 14 px patches (28 px tokens)")(_qwen_grid)
register_grid_family("qwen3-vl", matches=_family_detect("qwen3_vl"), tiny=_family_tiny("qwen3_vl"),
                     kept=_qwen_kept, signal_scores=_qwen_scores(("mean_attn",)), has_cls=False,
                     description="Qwen3-VL: 2 x 2 merged groups of 16 px patches (32 px tokens)")(_qwen_grid)
