"""Analytic FLOPs of LLaVA-OneVision, Qwen2.5-VL and Qwen3-VL for one image of a given size, at real dimensions.

The convention is `llava.bench.flops`' (FLOPs = 2 x MACs of matrix products; norms, activations,
softmax, rotary, interpolation, sorting and gathers count 0; LLM layers as there, through its
`prefill_flops` / `decode_flops`). What differs per family is the image's token layout:

- **OneVision** (`llava.model.onevision.image_grid`, the model's own rule): SigLIP runs on the base
  view plus the rows x cols crops, 729 patches per view with no [CLS]. The LLM sees N_i = 729 base
  tokens + the (possibly down-sampled) grid + one newline per grid row. Unpruned, the projector runs
  on the base view and the cut grid before down-sampling (as transformers does); pruned, on the K
  kept tokens, plus the whole cut grid when it down-samples (the resize needs it).
- **Qwen2.5-VL / Qwen3-VL**: the image is resized to multiples of patch x merge (transformers'
  `smart_resize`, with the released preprocessor's min/max pixels), giving P = (H/p)(W/p) patches and
  N_i = P / 4 merged tokens, the LLM's units. The patch embedding is a Conv3d over 2 frames
  (temporal_patch_size 2, the image repeated). Qwen2.5-VL's ViT has a gated SiLU MLP and window
  attention (windows of 112 px = 4 x 4 merged tokens, edge windows cut) except in its
  full-attention blocks; Qwen3-VL's has a plain MLP, full attention everywhere and, besides the
  merger, one DeepStack merger per `deepstack_visual_indexes` layer (same shape). Pruned, every
  merger runs on the K kept merged tokens only (a token's DeepStack features go with it).
- **Scoring** (`mean_attn`, the signal of towers without [CLS]): the QK^T rows of every query at
  one layer, 2 x T^2 x D per attention unit (a OneVision view; the whole image at one of Qwen's
  full-attention blocks), plus 2 x T^2 for the probe's (mask-weighted) sum over the query rows,
  which is a matrix product. The probe reuses the layer's own q and k, so no projection is added.

Dimensions are those of the released checkpoints' config.json and preprocessor_config.json
(llava-hf/llava-onevision-qwen2-7b-ov-hf, Qwen/Qwen2.5-VL-7B-Instruct, Qwen/Qwen3-VL-8B-Instruct).

    python -m llava.bench.family_flops --arch qwen2.5-vl-7b --image-size 480x640 --visual-token-num 64
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field, replace

from . import flops as F


@dataclass(frozen=True)
class TowerDims:
    """A ViT's shape: width, MLP width and kind, layers run, patch and the input channels of its patch embedding."""

    hidden: int
    intermediate: int
    layers: int
    patch: int
    heads: int = 16
    gated_mlp: bool = False  # gate, up, down (Qwen2.5-VL) instead of fc1, fc2
    temporal_patch: int = 1  # frames per patch (Qwen: 2, the image repeated)

    def layer_linear_macs(self, tokens: int) -> int:
        mlp = (3 if self.gated_mlp else 2) * self.hidden * self.intermediate
        return tokens * (4 * self.hidden * self.hidden + mlp)

    def attention_macs(self, unit_tokens) -> int:
        """QK^T and AV over attention units of these token counts (views or windows)."""
        return sum(2 * t * t * self.hidden for t in unit_tokens)

    def embed_macs(self, patches: int) -> int:
        return patches * 3 * self.temporal_patch * self.patch**2 * self.hidden


@dataclass(frozen=True)
class FamilyArch:
    """One preset: the family, its tower, its projector/merger linears (d_in, d_out) and its LLM."""

    name: str
    family: str  # "llava-onevision" | "qwen2.5-vl" | "qwen3-vl"
    tower: TowerDims
    projector: tuple[tuple[int, int], ...]
    llm: F.ModelDims
    mergers: int = 1  # Qwen3-VL: the merger plus one DeepStack merger per deepstack layer
    full_attention_layers: tuple[int, ...] = ()  # Qwen2.5-VL; empty: every layer is full attention
    window: int = 0  # Qwen2.5-VL: merged tokens per window side
    merge: int = 1  # Qwen: 2 x 2 patches per merged token
    min_pixels: int = 0
    max_pixels: int = 0
    onevision: dict = field(default_factory=dict)  # OneVision's config fields for OneVisionGeometry


def _llm(hidden, intermediate, layers, heads, kv_heads, vocab, head_dim=None) -> F.ModelDims:
    """LLM dims in `flops.ModelDims` (its vision fields unused here: the family's tower is counted apart)."""
    return F.ModelDims(v_hidden=0, v_intermediate=0, v_heads=0, v_layers=0, v_layers_run=0, image_size=0,
                       patch_size=1, projector=(), hidden=hidden, intermediate=intermediate, heads=heads,
                       kv_heads=kv_heads, head_dim=head_dim or hidden // heads, layers=layers, vocab=vocab)


_PINPOINTS = [[384 * h, 384 * w] for h in range(1, 7) for w in range(1, 7)]
FAMILY_ARCHS: dict[str, FamilyArch] = {
    # SigLIP so400m/14 at 384 (26 layers, the feature layer -1), 2-layer GELU projector, Qwen2-7B.
    "onevision-qwen2-7b": FamilyArch(
        "onevision-qwen2-7b", "llava-onevision", TowerDims(1152, 4304, 26, 14),
        ((1152, 3584), (3584, 3584)), _llm(3584, 18944, 28, 28, 4, 152128),
        onevision={"vision_config": {"image_size": 384, "patch_size": 14}, "vision_aspect_ratio": "anyres_max_9",
                   "image_grid_pinpoints": _PINPOINTS, "image_token_index": 151646}),
    # ViT 32 layers (full attention at 7, 15, 23, 31), windows of 112 px, merger 5120 -> 5120 -> 3584, Qwen2.5-7B.
    "qwen2.5-vl-7b": FamilyArch(
        "qwen2.5-vl-7b", "qwen2.5-vl", TowerDims(1280, 3420, 32, 14, gated_mlp=True, temporal_patch=2),
        ((5120, 5120), (5120, 3584)), _llm(3584, 18944, 28, 28, 4, 152064),
        full_attention_layers=(7, 15, 23, 31), window=112 // 14 // 2, merge=2, min_pixels=3136,
        max_pixels=12845056),
    # ViT 27 layers (SigLIP-2 shape, 16 px), merger + 3 DeepStack mergers 4608 -> 4608 -> 4096, Qwen3-8B.
    "qwen3-vl-8b": FamilyArch(
        "qwen3-vl-8b", "qwen3-vl", TowerDims(1152, 4304, 27, 16, temporal_patch=2),
        ((4608, 4608), (4608, 4096)), _llm(4096, 12288, 36, 32, 8, 151936, head_dim=128),
        mergers=4, merge=2, min_pixels=65536, max_pixels=16777216),
}


def get_family_arch(name: str) -> FamilyArch:
    try:
        return FAMILY_ARCHS[name]
    except KeyError:
        raise ValueError(f"unknown family --arch {name!r}; choose from {', '.join(FAMILY_ARCHS)}") from None


@dataclass(frozen=True)
class ImageLayout:
    """One image in a family: the tower's attention units (token counts), the LLM's N_i, the projector's rows.

    units: tokens of each full-attention unit (OneVision views, or Qwen's whole image);
    windows: Qwen2.5-VL's window sizes in patches (window-attention layers); tokens: N_i;
    projected_full: rows the projector runs on unpruned; grid_cut: OneVision's cut grid when it
    down-samples (projected in full even when pruned), else 0; resized: Qwen's (height, width) after resizing.
    """

    units: tuple[int, ...]
    windows: tuple[int, ...]
    tokens: int
    projected_full: int
    grid_cut: int = 0
    resized: tuple[int, int] | None = None

    @property
    def patches(self) -> int:
        return sum(self.units)


def image_layout(arch: FamilyArch, size_hw: tuple[int, int]) -> ImageLayout:
    """The layout of an image of (height, width) pixels under `arch`'s own rules."""
    height, width = (int(v) for v in size_hw)
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive (height, width), got {size_hw}")
    if arch.family == "llava-onevision":
        from llava.model.onevision import OneVisionGeometry, image_grid

        grid = image_grid((height, width), OneVisionGeometry.from_config(arch.onevision))
        n = grid.side * grid.side
        cut = (grid.cut_rows.stop - grid.cut_rows.start) * (grid.cut_cols.stop - grid.cut_cols.start)
        return ImageLayout((n,) * grid.views, (), grid.num_tokens, n + cut, cut if grid.downsampled else 0)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    factor = arch.tower.patch * arch.merge
    h, w = smart_resize(height, width, factor=factor, min_pixels=arch.min_pixels, max_pixels=arch.max_pixels)
    gh, gw = h // arch.tower.patch, w // arch.tower.patch
    patches = gh * gw
    windows: tuple[int, ...] = ()
    if arch.window:
        mh, mw, s = gh // arch.merge, gw // arch.merge, arch.window
        windows = tuple(min(s, mh - r) * min(s, mw - c) * arch.merge**2
                        for r in range(0, mh, s) for c in range(0, mw, s))
    merged = patches // arch.merge**2
    return ImageLayout((patches,), windows, merged, merged, resized=(h, w))


def vision_flops(arch: FamilyArch, layout: ImageLayout) -> int:
    """The tower on one image: patch embedding plus every layer run (window or full attention)."""
    t = arch.tower
    macs = t.embed_macs(layout.patches) + t.layers * t.layer_linear_macs(layout.patches)
    for layer in range(t.layers):
        windowed = bool(arch.full_attention_layers) and layer not in arch.full_attention_layers
        macs += t.attention_macs(layout.windows if windowed else layout.units)
    return 2 * macs


def scoring_flops(arch: FamilyArch, layout: ImageLayout) -> int:
    """`mean_attn` at one layer: every query row against every key of its unit (QK^T, T^2 x D MACs) and the
    sum over query rows (T^2 MACs); no extra projections."""
    return 2 * sum(t * t * (arch.tower.hidden + 1) for t in layout.units)


def projector_flops(arch: FamilyArch, rows: int) -> int:
    """The projector (OneVision) or the merger(s) (Qwen) on `rows` output tokens."""
    return 2 * rows * arch.mergers * sum(i * o for i, o in arch.projector)


def visual_tokens(layout: ImageLayout, k: int | None) -> int:
    """Visual tokens entering the LLM: N_i, or at most K (OneVision's K counts newlines too)."""
    return layout.tokens if k is None else min(k, layout.tokens)


def family_pipeline_flops(arch: FamilyArch | str, size_hw: tuple[int, int], k: int | None = None,
                          text_tokens: int = 64, new_tokens: int = 8, batch: int = 1) -> dict:
    """FLOPs per stage for `batch` rows of one image of `size_hw` each, K kept (None: all), with
    `text_tokens` prompt tokens besides the image and `new_tokens` generated; also the layout."""
    arch = get_family_arch(arch) if isinstance(arch, str) else arch
    if k is not None and k < 1:
        raise ValueError(f"K must be >= 1, got {k}")
    layout = image_layout(arch, size_hw)
    kept = visual_tokens(layout, k)
    pruned = kept < layout.tokens
    rows = (kept + layout.grid_cut if arch.family == "llava-onevision" else kept) if pruned else layout.projected_full
    length = text_tokens + kept
    out = {
        "vision": batch * vision_flops(arch, layout),
        "scoring": batch * scoring_flops(arch, layout) if pruned else 0,
        "select": 0,
        "projector": batch * projector_flops(arch, rows),
        "splice": 0,
        "prefill": F.prefill_flops(arch.llm, batch, length),
        "decode": F.decode_flops(arch.llm, batch, length, new_tokens),
    }
    out["ttft"] = sum(out[s] for s in ("vision", "scoring", "select", "projector", "splice", "prefill"))
    out["e2e"] = out["ttft"] + out["decode"]
    return {"arch": arch.name, "image_size": list(size_hw), "resized": list(layout.resized or size_hw),
            "patches": layout.patches, "visual_tokens_unpruned": layout.tokens, "visual_tokens": kept,
            "prompt_length": length, "flops": out}


def with_llm(arch: FamilyArch, **changes) -> FamilyArch:
    """A copy of `arch` with LLM fields changed (e.g. layers=2 for a cut-down bench model)."""
    return replace(arch, llm=replace(arch.llm, **changes))


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH in pixels, e.g. 480x640, got {text!r}") from None
    return h, w


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m llava.bench.family_flops", description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, choices=sorted(FAMILY_ARCHS))
    parser.add_argument("--image-size", type=_size, default=(480, 640), help="HEIGHTxWIDTH of the image (480x640)")
    parser.add_argument("--visual-token-num", type=int, default=None, help="K kept per image (default: all)")
    parser.add_argument("--text-tokens", type=int, default=64, help="prompt tokens besides the image")
    parser.add_argument("--new-tokens", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1)
    args = parser.parse_args(argv)
    result = family_pipeline_flops(args.arch, args.image_size, args.visual_token_num, args.text_tokens,
                                   args.new_tokens, args.batch_size)
    if args.visual_token_num is not None:
        full = family_pipeline_flops(args.arch, args.image_size, None, args.text_tokens, args.new_tokens,
                                     args.batch_size)
        result["ttft_speedup_flops"] = full["flops"]["ttft"] / result["flops"]["ttft"]
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
