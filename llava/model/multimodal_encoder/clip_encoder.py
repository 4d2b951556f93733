"""CLIP vision tower that runs only up to the selected layer and returns pruning signals.

LLaVA uses the patch features of the penultimate CLIP layer (`mm_vision_select_layer = -2`). This
tower runs the embeddings, the pre-layernorm and the encoder layers up to and including that
layer, never the ones after it. When a pruning method asks for it, the [CLS]->patch attention of a
layer is computed by the attention probe (`llava.probe`) from that layer's own q/k projections, for
the query rows the signal needs ([CLS] only, for FasterVLM): the layers themselves keep SDPA/flash
attention and no [B, H, T, T] map is stored. Which signals exist is `llava.pruning.signals`.

Shapes: B images, T = 1 + N tokens ([CLS] + N patches), D width, H heads, Dh = D / H.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.probe import HeadGeometry, QKProbe
from llava.pruning.base import VisionSignals
from llava.pruning.signals import compute_signals, tower_plan

from .patch_grid import PatchGridProperties
from .registry import register_vision_adapter


def resolve_hidden_state_index(select_layer: int, num_layers: int) -> int:
    """Index into CLIP's `hidden_states` tuple (0 = embeddings, i = output of layer i-1)."""
    idx = select_layer if select_layer >= 0 else num_layers + 1 + select_layer
    if not 0 <= idx <= num_layers:
        raise ValueError(f"mm_vision_select_layer={select_layer} is out of range for a {num_layers}-layer tower")
    return idx


# A full CLIP checkpoint (openai/clip-vit-large-patch14-336) also holds the text tower and projections.
CLIP_TEXT_KEYS = (r"^text_model\.", r"^text_projection\.", r"^visual_projection\.", r"^logit_scale$")


@register_vision_adapter("clip_vision_model", "clip")
class CLIPVisionTower(PatchGridProperties, nn.Module):
    """LLaVA's CLIP vision tower, truncated at the selected layer, with on-demand pruning signals."""

    def __init__(
        self,
        vision_model: CLIPVisionModel,
        select_layer: int = -2,
        select_feature: str = "patch",
        image_processor=None,
        name: str = "",
        freeze: bool = True,
    ) -> None:
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"mm_vision_select_feature must be 'patch' or 'cls_patch', not {select_feature!r}")
        self.vision_tower = vision_model
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.image_processor = image_processor
        self.vision_tower_name = name
        if freeze:  # LLaVA never trains the tower; a borrowed tower (transformers-native) keeps its flags
            self.vision_tower.requires_grad_(False)
        self.num_run_layers = resolve_hidden_state_index(select_layer, vision_model.config.num_hidden_layers)

    @classmethod
    def from_pretrained(
        cls, path: str, select_layer: int = -2, select_feature: str = "patch", allow_missing_weights: bool = False,
        **load_kwargs,
    ) -> "CLIPVisionTower":
        """CLIP weights and the image processor from a local folder (a CLIPVisionModel or a full CLIP).

        Weights the tower needs but the folder lacks are a CheckpointError naming the folder, unless
        `allow_missing_weights`; the text half of a full CLIP checkpoint is ignored.
        """
        from llava.mm_utils import load_image_processor
        from llava.model.checkpoint_checks import load_weights

        clip = load_weights(CLIPVisionModel, path, allow_missing_weights, ignore=CLIP_TEXT_KEYS,
                            what="the CLIP vision tower", **load_kwargs)
        return cls(clip, select_layer, select_feature, load_image_processor(path), name=str(path))

    @classmethod
    def from_config(cls, config: CLIPVisionConfig | dict, select_layer: int = -2, select_feature: str = "patch",
                    attn_implementation: str = "sdpa"):
        """A randomly initialised tower of the given shape (weights are loaded afterwards)."""
        if isinstance(config, dict):
            config = CLIPVisionConfig(**{k: v for k, v in config.items() if k != "model_type"})
        config._attn_implementation = attn_implementation
        return cls(CLIPVisionModel(config), select_layer, select_feature)

    # ---- signals ---------------------------------------------------------------------------
    def signal_probe(self, needs: frozenset[str] | set[str]) -> QKProbe:
        """The (unattached) probe on the layers and query rows that the signals in `needs` read."""
        if needs and self.num_run_layers == 0:
            raise ValueError("attention signals need at least one encoder layer "
                             "(select_layer points at the embeddings)")
        layers, q_rows, keep_q = tower_plan(needs, self.num_run_layers - 1, prefix=1) if needs else ([], None, False)
        encoder = self.vision_tower.encoder
        return QKProbe({i: encoder.layers[i].self_attn for i in layers}, q_rows=q_rows, keep_q=keep_q)

    def signals_from(self, needs: frozenset[str] | set[str], captured: dict,
                     hidden: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The signals in `needs` from what `signal_probe(needs)` captured during a tower run.

        hidden: [B, T, D] the selected layer's output ([CLS] first), for signals that read it (`cls_feature`).
        """
        last = self.num_run_layers - 1
        geometry = HeadGeometry.of(self.vision_tower.encoder.layers[last].self_attn)
        return compute_signals(needs, captured, geometry, last, prefix=1, hidden=hidden)

    # ---- forward -----------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, images: torch.Tensor, needs: frozenset[str] | set[str] = frozenset()) -> VisionSignals:
        """Encode B images [B, 3, S, S] into the selected layer's features plus the requested signals.

        Returns VisionSignals with features [B, N, D] (N = patches, +1 with 'cls_patch'),
        and cls_attn [B, N_patches] / cls_attn_layers [B, L_run, N_patches] / keys [B, N_patches, Dh] /
        cls_feature [B, D] (the [CLS] token's output of the selected layer) when named in `needs`.
        """
        probe = self.signal_probe(needs)
        vm = self.vision_tower
        hidden = vm.embeddings(images.to(device=self.device, dtype=self.dtype))  # [B, T, D]
        hidden = vm.pre_layrnorm(hidden)
        with probe.attached():
            for layer in vm.encoder.layers[:self.num_run_layers]:
                hidden = layer(hidden, None)

        features = hidden[:, 1:] if self.select_feature == "patch" else hidden  # [B, T, D] -> [B, N, D]
        if not needs:
            return VisionSignals(features)
        return VisionSignals(features, **self.signals_from(needs, probe.captured, hidden))
