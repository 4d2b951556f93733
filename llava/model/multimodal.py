"""A multimodal LLM as a composition: vision adapter, projector, splice and an Auto-loaded LLM.

    images --vision adapter (tower up to the selected layer + signals)--> select --projector (kept
    tokens only)--> splice at the placeholders (`llava.model.splice`) --> LLM (any transformers causal LM: LLaMA/Vicuna,
    Mistral, Qwen2/2.5/3) --> text

Each part is its own module and can be replaced on its own; the glue between them (encode, select,
project, splice) is `LlavaMetaForCausalLM`. The config is the LLM's own config class carrying
LLaVA's `mm_*` fields as extra attributes, as original LLaVA checkpoints store it, so
`AutoModelForCausalLM.from_config(config)` builds the LLM of any family.

Parameter names: `llm.*` (the causal LM as transformers names it), `mm_projector.*`,
`image_newline` (LLaVA-NeXT), `vision_tower.*` (when attached). `original_state_dict()` gives the
original LLaVA names, which `llava.model.families` reads and writes.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from llava.pruning.config import LEGACY_CONFIG_KEYS, PruningConfig

from .llava_arch import FROM_PRUNING, LlavaMetaForCausalLM, MultimodalInputs, VisualTokenNum
from .llm_loop import LLMLoop
from .llm_loop import generate as loop_generate
from .multimodal_encoder.clip_encoder import CLIPVisionTower
from .multimodal_projector.builder import build_vision_projector
from .splice import splice_image_tokens

MM_DEFAULTS = dict(
    mm_vision_tower=None,
    mm_hidden_size=None,
    mm_vision_select_layer=-2,
    mm_vision_select_feature="patch",
    mm_projector_type="mlp2x_gelu",
    image_aspect_ratio="pad",
    mm_patch_merge_type="flat",
    mm_use_im_start_end=False,
    mm_use_im_patch_token=False,
)

# Original LLaVA parameter prefixes <- ours (first match wins).
_TO_ORIGINAL = (
    ("llm.model.", "model."),
    ("llm.lm_head.", "lm_head."),
    ("mm_projector.", "model.mm_projector."),
    ("image_newline", "model.image_newline"),
    # transformers 5's CLIPVisionModel has no `vision_model.` level; the checkpoints' names do.
    ("vision_tower.vision_tower.", "model.vision_tower.vision_tower.vision_model."),
)


def with_mm_defaults(config: PretrainedConfig) -> PretrainedConfig:
    """Give an LLM config LLaVA's multimodal fields where it lacks them (in place; returns it)."""
    for key, value in MM_DEFAULTS.items():
        if not hasattr(config, key):
            setattr(config, key, value)
    return config


def last_is_largest(position_ids: torch.Tensor, attention_mask: torch.Tensor) -> bool:
    """Whether every (left-padded) row's last position [B, T] is its largest, so that transformers' `generate`,
    which continues one past the last, continues one past the largest."""
    largest = position_ids.masked_fill(~attention_mask.bool(), -1).amax(dim=1)
    return bool((position_ids[:, -1] == largest).all())


def original_name(name: str) -> str:
    """Our parameter name -> the original LLaVA checkpoint's name."""
    for ours, theirs in _TO_ORIGINAL:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise KeyError(f"parameter {name!r} has no original-layout name")


class LlavaForPruning(nn.Module, LlavaMetaForCausalLM):
    """LLaVA-style multimodal LLM with training-free visual-token pruning before the projector.

    llm: a transformers causal LM; vision_tower: the vision adapter (attach later if None).
    """

    def __init__(self, config: PretrainedConfig, llm: nn.Module | None = None,
                 vision_tower: CLIPVisionTower | None = None) -> None:
        super().__init__()
        self.llm = llm if llm is not None else AutoModelForCausalLM.from_config(config)
        self.config = with_mm_defaults(self.llm.config)  # one config object, shared with the LLM
        # Older releases kept pruning settings in config.json: take them once, then drop them.
        legacy = {key: self.config.__dict__.pop(key) for key in LEGACY_CONFIG_KEYS if key in self.config.__dict__}
        self.pruning = PruningConfig.from_legacy(legacy) if legacy else PruningConfig()
        self.vision_tower = vision_tower
        self.splice = splice_image_tokens  # placeholders -> visual tokens; a family may bring its own
        ref = self.llm.get_input_embeddings().weight  # parts live with the token embeddings
        cfg = self.config
        self.mm_projector = None
        if cfg.mm_hidden_size:
            self.mm_projector = build_vision_projector(cfg.mm_projector_type, cfg.mm_hidden_size, cfg.hidden_size)
            self.mm_projector.to(device=ref.device, dtype=ref.dtype)
        self.image_newline = None
        if "unpad" in (cfg.mm_patch_merge_type or ""):
            # LLaVA-NeXT's learned token that ends each row of the unpadded grid.
            self.image_newline = nn.Parameter(
                torch.randn(cfg.hidden_size, device=ref.device, dtype=ref.dtype) / cfg.hidden_size**0.5)

    # ---- parts ------------------------------------------------------------------------------------
    def get_model(self) -> nn.Module:
        """The LLM's decoder (embed_tokens, layers, norm, rotary_emb)."""
        return self.llm.get_decoder()

    def get_vision_tower(self) -> CLIPVisionTower | None:
        return self.vision_tower

    def get_input_embeddings(self) -> nn.Embedding:
        return self.llm.get_input_embeddings()

    @property
    def lm_head(self) -> nn.Module:
        return self.llm.get_output_embeddings()

    @property
    def generation_config(self):
        return self.llm.generation_config

    @property
    def dtype(self) -> torch.dtype:
        return self.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.get_input_embeddings().weight.device

    def attach_vision_tower(self, tower: CLIPVisionTower) -> None:
        """Install a loaded vision tower on the device of the token embeddings."""
        tower.select_layer = self.config.mm_vision_select_layer
        self.vision_tower = tower.to(device=self.device)

    def resize_token_embeddings(self, size: int):
        return self.llm.resize_token_embeddings(size)

    def original_state_dict(self, with_tower: bool = False) -> dict[str, torch.Tensor]:
        """The parameters under the original LLaVA checkpoint's names."""
        return {original_name(k): v for k, v in self.state_dict().items()
                if with_tower or not k.startswith("vision_tower.")}

    # ---- checkpoints ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str, **llm_kwargs) -> "LlavaForPruning":
        """The model of a checkpoint folder, through its family's loader (`llava.model.families`).

        `llm_kwargs` go to the LLM's `from_pretrained`. `load_pretrained_model` also attaches an
        external tower and loads the tokenizer and image processor.
        """
        from .builder import read_config
        from .families import LoadOptions, family_of

        raw = read_config(path)
        return family_of(raw, path).load(path, raw, LoadOptions(llm_kwargs=llm_kwargs))

    def save_pretrained(self, folder, with_tower: bool = False) -> None:
        """Write the original LLaVA layout (config.json with mm_* fields, LLM and projector weights).

        Pruning settings are run-time values and are never written.
        """
        from .family_llava import save_original

        save_original(self, folder, with_tower=with_tower)

    # ---- forward / generate ----------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        images: torch.Tensor | Sequence[torch.Tensor] | None = None,
        image_sizes: list | None = None,
        labels: torch.LongTensor | None = None,
        visual_token_num: VisualTokenNum = FROM_PRUNING,
        pruning: PruningConfig | None = None,
        **kwargs,
    ):
        """Causal-LM forward; with `images`, placeholders in input_ids [B, L] become visual tokens first.

        Every other keyword (cache, position_ids, inputs_embeds, logits_to_keep, ...) goes to the LLM.
        """
        truncate_prompts = kwargs.pop("truncate_prompts", False)
        texts = kwargs.pop("texts", None)  # the question per row, for question-aware methods (CDPruner)
        if kwargs.get("inputs_embeds") is None and images is not None:
            side = getattr(self.config, "tokenizer_padding_side", None) or "right"
            mm = self.prepare_multimodal_inputs(
                input_ids, images, attention_mask, labels, visual_token_num, side, image_sizes=image_sizes,
                pruning=pruning, truncate_prompts=truncate_prompts, texts=texts,
            )
            if self.in_llm_pruner(mm, pruning) is not None:
                raise ValueError("in-LLM pruning (e.g. fastv) runs in generate(); forward() would run the "
                                 "unpruned LLM (set_pruning(None) to take full-model logits)")
            input_ids, labels, attention_mask = None, mm.labels, mm.attention_mask
            kwargs.update(inputs_embeds=mm.inputs_embeds, position_ids=mm.position_ids)
        return self.llm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        images: torch.Tensor | Sequence[torch.Tensor] | None = None,
        image_sizes: list | None = None,
        attention_mask: torch.Tensor | None = None,
        visual_token_num: VisualTokenNum = FROM_PRUNING,
        vision_signals=None,
        pruning: PruningConfig | None = None,
        texts: str | Sequence[str] | None = None,
        **kwargs,
    ) -> torch.LongTensor:
        """Generate from prompts with image placeholders; returns only the new tokens [B, T_new].

        `inputs` [B, L] may be padded on either side (give `attention_mask`); the spliced batch is
        left-padded. `pruning` (default: `self.pruning`) sets the method and budget of this call;
        `visual_token_num` overrides its K, per image if a list; `vision_signals` (from
        `vision_signals(images)`) reuses one tower run across budgets. After the call,
        `self.last_multimodal` holds the visual-token counts and kept indices per image. A prompt
        longer than the context raises ContextOverflowError unless `truncate_prompts=True`. `texts`: the
        question of each row (or one for all), for methods that score patches against it (CDPruner).
        """
        truncate_prompts = kwargs.pop("truncate_prompts", False)
        if "inputs_embeds" in kwargs:
            return self.llm.generate(attention_mask=attention_mask, **kwargs)
        mm = self.prepare_multimodal_inputs(
            inputs, images, attention_mask, None, visual_token_num, "left", signals=vision_signals,
            image_sizes=image_sizes, pruning=pruning, truncate_prompts=truncate_prompts, texts=texts,
        )
        self.last_multimodal = mm.encoded
        pruner = self.in_llm_pruner(mm, pruning)
        if pruner is None:
            return self.generate_spliced(mm, self._pruning(pruning).position_mode, **kwargs)
        loop = LLMLoop(self.get_model(), self.lm_head, pruner)
        out = loop_generate(loop, mm.inputs_embeds, mm.attention_mask, mm.position_ids, self.generation_config,
                            **kwargs)
        mm.encoded.kept_indices = list(pruner.kept)
        mm.encoded.in_llm = pruner.report()
        return out

    def generate_spliced(self, mm: MultimodalInputs, position_mode: str | None = None, **kwargs) -> torch.LongTensor:
        """The stock LLM's `generate` on a left-padded spliced batch; returns the new tokens [B, T_new].

        "compact" (None): transformers numbers the positions from the mask, as always. "keep": the splice's
        position ids go along; transformers continues one past each row's last position, which is its
        largest unless a prompt ends inside a pruned image: such a batch decodes through the LLM loop (no
        dropper), which continues one past the row's largest position.
        """
        if position_mode != "keep":
            return self.llm.generate(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask, **kwargs)
        if last_is_largest(mm.position_ids, mm.attention_mask):
            return self.llm.generate(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask,
                                     position_ids=mm.position_ids, **kwargs)
        return loop_generate(LLMLoop(self.get_model(), self.lm_head), mm.inputs_embeds, mm.attention_mask,
                             mm.position_ids, self.generation_config, **kwargs)

    def in_llm_pruner(self, mm: MultimodalInputs, pruning: PruningConfig | None = None):
        """The token dropper of an in-LLM pruning method (e.g. FastV) for this batch, or None."""
        from llava.pruning.in_llm import make_dropper

        if mm.encoded is None:
            return None
        return make_dropper(self._pruning(pruning), mm.image_spans, mm.encoded.budgets, self.config.num_hidden_layers)
