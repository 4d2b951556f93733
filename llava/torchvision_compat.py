"""Make `import torchvision` work where its compiled ops cannot load.

The registry's torchvision wheels are CUDA builds: beside the CPU torch, their `_C` extension fails to
load (it links libtorch_cuda), and `import torchvision` then stops in its meta registrations with
`operator torchvision::nms does not exist`. Serving and evaluating LLaVA never calls those ops (NMS,
RoI align/pool, deformable convolution); what transformers' image and video processors and vLLM need
is torchvision's pure-Python transforms. `prepare_torchvision()` declares the ops' schemas, with no
kernels, before torchvision is imported, so the import completes and the transforms work; calling
one of the ops raises torch's "no kernel" error naming it.

This only runs where torchvision is installed and its ops fail to load; with a working torchvision it
does nothing, and without torchvision it does nothing (the core install keeps torchvision out; the
families there use the PIL image processors). It changes no module of torchvision, transformers or
vLLM: the schemas are registered through torch.library, as torchvision's own extension does.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path

import torch

# torchvision's operator schemas (torchvision 0.2x, csrc/ops/*.cpp), as its extension declares them.
OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, int sampling_ratio, "
    "bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width, "
    "int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, SymInt pooled_width) "
    "-> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, "
    "SymInt width) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float input_scale, int input_zero_point, float rois_scale, "
    "int rois_zero_point, float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
    "bool aligned) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, SymInt stride_h, "
    "SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, SymInt groups, "
    "SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, SymInt dilation_w, "
    "SymInt groups, SymInt offset_groups, bool use_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)


def _extension(spec) -> Path | None:
    """torchvision's compiled `_C` extension file, if the package has one."""
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("_C*.so")) + sorted(folder.glob("_C*.pyd"))
    return found[0] if found else None


def torchvision_state() -> str:
    """'absent' (not installed), 'imported', 'native' (its ops load) or 'no-ops' (they cannot load)."""
    if "torchvision" in sys.modules:
        return "imported"
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return "absent"
    ext = _extension(spec)
    if ext is None:
        return "no-ops"
    try:
        torch.ops.load_library(str(ext))
    except OSError:
        return "no-ops"
    return "native"


@lru_cache(maxsize=None)
def _declared_ops() -> torch.library.Library:
    """The schemas of torchvision's ops, kept alive for the process (a Library deregisters when freed)."""
    library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in OP_SCHEMAS:
        library.define(schema)
    return library


def prepare_torchvision() -> str:
    """Before torchvision is imported: declare its ops if they cannot load. Returns `torchvision_state()`."""
    state = torchvision_state()
    if state == "no-ops":
        _declared_ops()
    return state
