"""SigLIP vision tower (LLaVA-OneVision) that runs only up to the selected layer and returns pruning signals.

SigLIP has no [CLS] token: every output token is a patch (384 px / 14 = 27 x 27 = 729 per view).
The tower runs the embeddings and the encoder layers up to and including the selected one, never
the ones after it nor the post-layernorm (LLaVA-OneVision reads `hidden_states[-1]`, the last
layer's output before it). Signals come from the probe (`llava.probe`) on that layer's own q/k.

Without [CLS], a method that ranks by `cls_attn` (fastervlm, vispruner) gets a stand-in: the
signal named by `cls_stand_in` (default `mean_attn`, the mean attention each patch receives from
all queries at the selected layer; the others are `signals.CLS_STAND_INS`), handed over under the
name `cls_attn`. A call picks another with `--pruning-args cls_stand_in=...` (`llava_arch.run_tower`). Signals that need the
[CLS] token itself (`cls_attn_layers`, `cls_feature`) are refused with an error.

Shapes: B views, N patches (no prefix token), D width.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SiglipVisionConfig, SiglipVisionModel

from llava.probe import HeadGeometry, QKProbe
from llava.pruning.base import SIGNAL_CLS_ATTN, VisionSignals
from llava.pruning.signals import (CLS_STAND_INS, compute_signals, hand_over_stand_in, signal_spec, stand_in_needs,
                                   tower_plan)

from .clip_encoder import resolve_hidden_state_index
from .patch_grid import PatchGridProperties
from .registry import register_vision_adapter



class MissingSignalError(ValueError):
    """A method asked for a signal this tower cannot give (no [CLS] token)."""


@register_vision_adapter("siglip_vision_model", "siglip")
class SiglipVisionTower(PatchGridProperties, nn.Module):
    """SigLIP truncated at the selected layer, with probe signals and a stand-in for [CLS] attention."""

    def __init__(self, vision_model: SiglipVisionModel, select_layer: int = -1, select_feature: str = "patch",
                 image_processor=None, name: str = "", cls_stand_in: str = "mean_attn") -> None:
        super().__init__()
        if select_feature not in ("patch", "full"):
            raise ValueError(f"SigLIP has no [CLS] token: the feature selection must be 'full' (all patches), "
                             f"not {select_feature!r}")
        if cls_stand_in not in CLS_STAND_INS:
            raise ValueError(f"cls_stand_in={cls_stand_in!r}: must be one of {list(CLS_STAND_INS)}")
        self.vision_tower = vision_model
        self.select_layer = select_layer
        self.select_feature = "patch"  # every token is a patch
        self.image_processor = image_processor
        self.vision_tower_name = name
        self.cls_stand_in = cls_stand_in
        self.vision_tower.requires_grad_(False)
        self.num_run_layers = resolve_hidden_state_index(select_layer, vision_model.config.num_hidden_layers)

    @classmethod
    def from_config(cls, config: SiglipVisionConfig | dict, select_layer: int = -1, select_feature: str = "patch",
                    attn_implementation: str = "sdpa", cls_stand_in: str = "mean_attn") -> "SiglipVisionTower":
        """A randomly initialised tower of the given shape (weights are loaded afterwards)."""
        if isinstance(config, dict):
            config = SiglipVisionConfig(**{k: v for k, v in config.items() if k != "model_type"})
        config._attn_implementation = attn_implementation
        return cls(SiglipVisionModel(config), select_layer, select_feature, cls_stand_in=cls_stand_in)

    @classmethod
    def from_pretrained(cls, path: str, select_layer: int = -1, select_feature: str = "patch",
                        allow_missing_weights: bool = False, **load_kwargs) -> "SiglipVisionTower":
        """SigLIP weights from a local SiglipVisionModel folder (missing weights are a CheckpointError)."""
        from llava.model.checkpoint_checks import load_weights

        model = load_weights(SiglipVisionModel, path, allow_missing_weights, ignore=(r"^text_model\.",),
                             what="the SigLIP vision tower", **load_kwargs)
        return cls(model, select_layer, select_feature, name=str(path))

    # ---- signals ---------------------------------------------------------------------------------
    def tower_signals(self, needs: frozenset[str] | set[str]) -> frozenset[str]:
        """The signals the tower computes for `needs`: `cls_attn` becomes its stand-in.

        A signal that needs the [CLS] token itself raises MissingSignalError naming it.
        """
        missing = sorted(n for n in needs if n != SIGNAL_CLS_ATTN and signal_spec(n).needs_prefix)
        if missing:
            raise MissingSignalError(f"signal(s) {missing} need a [CLS] token, which SigLIP lacks")
        return stand_in_needs(needs, self.cls_stand_in)

    def signal_probe(self, needs: frozenset[str] | set[str]) -> QKProbe:
        """The (unattached) probe on the layers and query rows that the tower signals of `needs` read."""
        computed = self.tower_signals(needs)
        if computed and self.num_run_layers == 0:
            raise ValueError("attention signals need at least one encoder layer "
                             "(select_layer points at the embeddings)")
        layers, q_rows, keep_q = ([], None, False)
        if computed:
            layers, q_rows, keep_q = tower_plan(computed, self.num_run_layers - 1, prefix=0)
        encoder = self.vision_tower.encoder
        return QKProbe({i: encoder.layers[i].self_attn for i in layers}, q_rows=q_rows, keep_q=keep_q)

    def signals_from(self, needs: frozenset[str] | set[str], captured: dict,
                     hidden: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The signals of `needs` from what `signal_probe(needs)` captured; `cls_attn` holds the stand-in."""
        computed = self.tower_signals(needs)
        last = self.num_run_layers - 1
        geometry = HeadGeometry.of(self.vision_tower.encoder.layers[last].self_attn)
        values = compute_signals(computed, captured, geometry, last, prefix=0, hidden=hidden)
        return hand_over_stand_in(values, needs, self.cls_stand_in)

    # ---- forward ---------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, images: torch.Tensor, needs: frozenset[str] | set[str] = frozenset()) -> VisionSignals:
        """Encode B views [B, 3, S, S] into the selected layer's features [B, N, D] plus the signals of `needs`."""
        probe = self.signal_probe(needs)
        vm = self.vision_tower
        hidden = vm.embeddings(images.to(device=self.device, dtype=self.dtype))  # [B, N, D]
        with probe.attached():
            for layer in vm.encoder.layers[:self.num_run_layers]:
                hidden = layer(hidden, None)
        if not needs:
            return VisionSignals(hidden)
        return VisionSignals(hidden, **self.signals_from(needs, probe.captured, hidden))
