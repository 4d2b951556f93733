"""CLIP's text half, for methods that score patches against the question (CDPruner's relevance).

A full CLIP checkpoint (openai/clip-vit-large-patch14-336, the folder LLaVA's `mm_vision_tower`
names) holds the text tower, its projection and the vision projection beside the vision tower.
`load_clip_text_tower(folder)` loads those three, and the tokenizer, as CDPruner's
`CLIPVisionTower.load_text_tower` does (Theia-4869/CDPruner, `llava/model/multimodal_encoder/clip_encoder.py`).

The holder is not an `nn.Module` on purpose: it stays beside the LLaVA model rather than inside it,
so it never enters the model's state dict, its saved checkpoints or its parameter counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, CLIPVisionModelWithProjection

# What each half of a full CLIP checkpoint leaves unused.
VISION_KEYS = (r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$")
TEXT_KEYS = (r"^text_model\.", r"^text_projection\.", r"^logit_scale$")


@dataclass
class CLIPTextTower:
    """CLIP's tokenizer, text tower with projection, and the vision projection (kept in float32).

    text_model: CLIPTextModelWithProjection; visual_projection: [C, D] linear (no bias), D the vision
    width, C the joint embedding width.
    """

    tokenizer: CLIPTokenizer
    text_model: CLIPTextModelWithProjection
    visual_projection: nn.Linear
    name: str = ""

    @property
    def device(self) -> torch.device:
        return self.visual_projection.weight.device

    def to(self, device: torch.device | str) -> "CLIPTextTower":
        self.text_model.to(device)
        self.visual_projection.to(device)
        return self

    @torch.no_grad()
    def embed_text(self, text: str) -> torch.Tensor:
        """One text -> [M, C] projected embeddings, one per 77-token segment, as CDPruner encodes it.

        The token ids (BOS and EOS included, no truncation) are zero-padded to a multiple of the
        text tower's positions and cut into segments, each run on its own (CDPruner's `forward`).
        """
        inputs = self.tokenizer(text=text, return_tensors="pt")
        width = self.text_model.config.max_position_embeddings
        length = inputs["input_ids"].shape[1]
        segments = (length - 1) // width + 1
        pad = segments * width - length
        batch = {key: torch.cat([v, v.new_zeros(v.shape[0], pad)], dim=1).reshape(-1, width).to(self.device)
                 for key, v in inputs.items() if key in ("input_ids", "attention_mask")}  # [M, 77]
        return self.text_model(**batch).text_embeds.float()  # [M, C]

    @torch.no_grad()
    def relevance(self, post_layernorm: nn.Module, features: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Mean cosine similarity of each patch with its image's text: features [B, N, D], B texts -> [B, N].

        Image side as CDPruner: the selected layer's patch features through the tower's
        `post_layernorm` (in the tower's dtype), then the vision projection in float32.
        """
        if len(texts) != features.shape[0]:
            raise ValueError(f"got {len(texts)} texts for {features.shape[0]} images (one question per image)")
        norm_dtype = next(post_layernorm.parameters()).dtype
        image = self.visual_projection(post_layernorm(features.to(norm_dtype)).float().to(self.device))  # [B, N, C]
        image = image / image.norm(dim=-1, keepdim=True)
        embedded: dict[str, torch.Tensor] = {}
        rows = []
        for b, text in enumerate(texts):
            if text not in embedded:  # the views of one anyres image share one question
                t = self.embed_text(text)
                embedded[text] = t / t.norm(dim=-1, keepdim=True)  # [M, C]
            rows.append((image[b] @ embedded[text].t()).mean(dim=-1))  # [N, M] -> [N]
        return torch.stack(rows).to(features.device)  # [B, N]


def load_clip_text_tower(path: str, device: torch.device | str = "cpu",
                         allow_missing_weights: bool = False) -> CLIPTextTower:
    """The text half of the full CLIP checkpoint in folder `path` (float32, as CDPruner loads it).

    The folder must hold a CLIPConfig with text weights and a CLIP tokenizer; a vision-only CLIP
    folder is an error naming it.
    """
    from llava.model.checkpoint_checks import CheckpointError, load_weights

    config = Path(path) / "config.json"
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type") if config.is_file() else None
    if model_type != "clip":
        raise CheckpointError(
            f"{path}: CDPruner's relevance needs the full CLIP checkpoint (model_type 'clip', text tower and "
            f"projections) but its config.json says {model_type!r}; point --vision-tower at the full CLIP folder"
        )
    text = load_weights(CLIPTextModelWithProjection, str(path), allow_missing_weights, ignore=VISION_KEYS,
                        what="the CLIP text tower", dtype=torch.float32)
    vision = load_weights(CLIPVisionModelWithProjection, str(path), allow_missing_weights, ignore=TEXT_KEYS,
                          what="the CLIP vision projection", dtype=torch.float32)
    projection = vision.visual_projection
    del vision  # only its projection is kept; the tower itself is the LLaVA model's
    try:
        tokenizer = CLIPTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot load the CLIP tokenizer ({type(err).__name__}: {err}); "
                              "the full CLIP checkpoint ships vocab.json and merges.txt or tokenizer.json") from err
    text.eval().requires_grad_(False)
    projection.requires_grad_(False)
    return CLIPTextTower(tokenizer, text, projection, name=str(path)).to(device)

