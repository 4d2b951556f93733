"""LLaVA-NeXT ('faithful' anyres) with the methods whose tokens are not plain patches: VisionZip's
[CLS] token and merged tokens, and DivPrune's selection on the projected embeddings."""

from __future__ import annotations

import torch
from PIL import Image

from llava.mm_utils import process_images
from llava.pruning import PruningConfig, get_method
from oracle import REPO

SCENE = REPO / "assets" / "samples" / "scene.png"


def _views(model, processor, size=(400, 300)):
    pixels = process_images([Image.open(SCENE).convert("RGB").resize(size)], processor, model.config)
    views = pixels[0] if not torch.is_tensor(pixels) or pixels.ndim == 5 else pixels
    return views, [size]


def test_visionzip_cls_token_leads_and_merged_tokens_sit_at_their_slots(next_model):
    _, model, processor, _ = next_model
    views, sizes = _views(model, processor)
    pruning = PruningConfig("visionzip", 40)
    encoded = model.encode_anyres_images(views, sizes, pruning=pruning)
    signals = model.vision_signals(views, pruning=pruning)
    with torch.no_grad():
        cls = model.mm_projector(signals.cls_feature[:1])  # the base view's [CLS]
    out, slots = encoded.features[0], encoded.kept_indices[0]
    torch.testing.assert_close(out[0], cls[0], atol=1e-6, rtol=0)
    assert out.shape[0] == 1 + len(slots)  # [CLS] stands at no slot
    default = model.encode_anyres_images(views, sizes, pruning=PruningConfig("visionzip", 40,
                                                                           method_args="cls_token=false"))
    assert default.features[0].shape[0] == len(default.kept_indices[0])


def test_divprune_keeps_the_projected_embeddings_of_its_picks(next_model):
    _, model, processor, _ = next_model
    views, sizes = _views(model, processor)
    pruning = PruningConfig("divprune", 40)
    signals = model.vision_signals(views, pruning=pruning)
    with torch.no_grad():
        projected = model.mm_projector(signals.features)  # [V, N, H]: every patch of every view
    torch.testing.assert_close(signals.projected, projected, atol=0, rtol=0)
    encoded = model.encode_anyres_images(views, sizes, pruning=pruning)
    again = model.encode_anyres_images(None, sizes, signals=signals, pruning=pruning)
    torch.testing.assert_close(encoded.features[0], again.features[0], atol=0, rtol=0)
    rows = {tuple(r.tolist()) for r in projected.flatten(0, 1)}
    newline = tuple(model.image_newline.tolist())
    assert all(tuple(t.tolist()) in rows or tuple(t.tolist()) == newline for t in encoded.features[0])
    assert get_method("divprune").needs == {"projected"}
