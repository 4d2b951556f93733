"""Video-LLaVA as a composition: an image tower, a video tower, one projector, the splice and the LLM.

    <image> -> image tower (CLIP up to the selected layer, patches only)      -> select -> projector
    <video> -> video tower (the same CLIP layout, run on every frame: [CLS] + patches) -> select per
               frame -> projector on the kept tokens -> the frames' tokens one after another

Prompts carry `IMAGE_TOKEN_INDEX` for `<image>` and `VIDEO_TOKEN_INDEX` for `<video>`
(`tokenizer_visual_token`). `images` is one list in reading order over both: a picture [3, S, S] per
`<image>` and the frames [T, 3, S, S] of each `<video>`, as in the original Video-LLaVA.

Unpruned, a video gives T x (1 + N) tokens: each frame's [CLS] row and its N patches, as both the
original code and transformers' VideoLlava feed them. With a budget K (`--visual-token-num`), each
frame keeps K of its N patches and its [CLS] row is dropped, as FasterVLM's video code does: the LLM
sees T x K video tokens. Every pre-LLM method runs per frame, on that frame's own signals (frame
order, raster order within a frame); `PruningConfig.video_mode='temporal'` lets the method choose
T x K tokens jointly over all frames. In-LLM methods (FastV, ...) get the whole unpruned video block
with a budget of T x K.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import PretrainedConfig

from llava.constants import DEFAULT_IMAGE_TOKEN, DEFAULT_VIDEO_TOKEN, IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX
from llava.pruning import get_method
from llava.pruning.base import SIGNAL_TEXT_RELEVANCE
from llava.pruning.base import VisionSignals, gather_tokens
from llava.pruning.config import PruningConfig

from .llava_arch import FROM_PRUNING, EncodedImages, VisualTokenNum, _from_pruning, add_projected, expand_budgets, \
    tower_needs
from .multimodal import LlavaForPruning
from .multimodal_encoder.clip_encoder import CLIPVisionTower
from .splice import MultimodalInputs


@dataclass
class EncodedVisuals(EncodedImages):
    """EncodedImages over images and videos in reading order.

    frames: per item, T for a video, None for an image; frame_budgets: per item, K per frame for a
    pruned video (None otherwise). `budgets` holds a video's total (T x K), which in-LLM methods use.
    kept_indices of a pruned video: [T, M] raster positions per frame ('frame' mode), or [T x K]
    positions f * N + p over all frames ('temporal' mode).
    """

    frames: list[int | None] = field(default_factory=list)
    frame_budgets: list[int | None] = field(default_factory=list)


@dataclass
class VideoSignals:
    """One video-tower run over V videos of T frames, reusable across budgets (a K sweep).

    frames: VisionSignals over the V x T frames, video-major (features [V*T, 1 + N, D]); num_frames: T.
    """

    frames: VisionSignals
    num_frames: int

    @property
    def num_videos(self) -> int:
        return self.frames.features.shape[0] // self.num_frames

    def index(self, videos: Sequence[int]) -> "VideoSignals":
        """The signals of some of the videos, in the order given."""
        rows = [v * self.num_frames + f for v in videos for f in range(self.num_frames)]
        return VideoSignals(self.frames.index(rows), self.num_frames)


def tokenizer_visual_token(prompt: str, tokenizer, return_tensors: str | None = None) -> list[int] | torch.Tensor:
    """Ids of `prompt` with each `<image>` -> IMAGE_TOKEN_INDEX and each `<video>` -> VIDEO_TOKEN_INDEX.

    Text chunks are tokenized on their own, as `tokenizer_image_token` does (one leading BOS).
    """
    from llava.mm_utils import tokenizer_image_token

    pieces = prompt.split(DEFAULT_VIDEO_TOKEN)
    ids = tokenizer_image_token(DEFAULT_IMAGE_TOKEN.join(pieces), tokenizer, IMAGE_TOKEN_INDEX)
    # `<image>` positions that came from a `<video>`: the joins between the pieces, in order.
    kinds: list[int] = []
    for i, piece in enumerate(pieces):
        kinds += [IMAGE_TOKEN_INDEX] * piece.count(DEFAULT_IMAGE_TOKEN)
        if i < len(pieces) - 1:
            kinds.append(VIDEO_TOKEN_INDEX)
    slots = iter(kinds)
    ids = [next(slots) if t == IMAGE_TOKEN_INDEX else t for t in ids]
    if return_tensors is None:
        return ids
    if return_tensors == "pt":
        return torch.tensor(ids, dtype=torch.long)
    raise ValueError(f"unsupported return_tensors={return_tensors!r}; use None or 'pt'")


class VideoLlavaForPruning(LlavaForPruning):
    """Video-LLaVA with per-frame visual-token pruning; `vision_tower` is the image tower.

    video_tower: a vision adapter with select_feature 'cls_patch' (every frame's [CLS] and patches);
    num_frames: the frames per video the checkpoint was trained with (8).
    """

    def __init__(self, config: PretrainedConfig, llm=None, vision_tower: CLIPVisionTower | None = None,
                 video_tower: CLIPVisionTower | None = None, num_frames: int = 8) -> None:
        super().__init__(config, llm, vision_tower)
        self.video_tower = video_tower
        self.num_frames = num_frames
        self.video_processor = None  # the PIL frame processor (VideoLlavaImageProcessor), set by the loader

    def get_video_tower(self) -> CLIPVisionTower | None:
        return self.video_tower

    def attach_video_tower(self, tower: CLIPVisionTower) -> None:
        """Install the video tower on the device of the token embeddings."""
        if tower.select_feature != "cls_patch":
            raise ValueError("Video-LLaVA's video tower feeds every frame's [CLS] row: select_feature must be "
                             f"'cls_patch', not {tower.select_feature!r}")
        self.video_tower = tower.to(device=self.device)

    def save_pretrained(self, folder, with_tower: bool = False) -> None:
        """Not supported: the original LLaVA layout has no video tower (save transformers' model instead)."""
        raise NotImplementedError(f"cannot save Video-LLaVA to {folder} in the original LLaVA layout, which has no "
                                  "video tower; keep the VideoLlavaForConditionalGeneration folder it was loaded from")

    # ---- videos -> visual tokens --------------------------------------------------------------
    @torch.no_grad()
    def video_signals(self, videos: torch.Tensor, pruning: PruningConfig | None = None) -> VideoSignals:
        """Run the video tower once: videos [V, T, 3, S, S] -> VideoSignals holding what the method of
        `pruning` (default: the model's) needs, for every budget of a sweep."""
        if videos.ndim != 5:
            raise ValueError(f"videos must be [V, T, 3, S, S], got shape {list(videos.shape)}")
        frames = self.get_video_tower()(videos.flatten(0, 1), needs=tower_needs(self.pruning_needs(pruning)))
        return VideoSignals(frames, videos.shape[1])  # features [V*T, 1 + N, D]

    @torch.no_grad()
    def encode_videos(
        self,
        videos: torch.Tensor | None,
        visual_token_num: VisualTokenNum = FROM_PRUNING,
        pruning: PruningConfig | None = None,
        signals: VideoSignals | None = None,
    ) -> EncodedVisuals:
        """videos [V, T, 3, S, S] -> EncodedVisuals (V x [T * (1 + N), H] unpruned, V x [T * K, H] at K per frame).

        K comes from `pruning` (default: the model's; a ratio resolves against a frame's N patches) or
        `visual_token_num` (per video if a list). Only kept tokens are projected. `signals` (from
        `video_signals`) replaces `videos` when the tower has already run.
        """
        if signals is None and (videos is None or videos.ndim != 5):
            raise ValueError(f"videos must be [V, T, 3, S, S], got {None if videos is None else list(videos.shape)}")
        cfg = self._pruning(pruning)
        method = get_method(cfg.method)
        if SIGNAL_TEXT_RELEVANCE in method.needs and cfg.prunes:
            raise ValueError(f"pruning method {method.name!r} cannot run on Video-LLaVA: it scores patches against "
                             "the question with the vision tower's own CLIP text tower, and Video-LLaVA's "
                             "LanguageBind towers ship none in its checkpoint")
        tower = self.get_video_tower()
        n_videos, t = (signals.num_videos, signals.num_frames) if signals is not None else videos.shape[:2]
        n = tower.num_patches
        if _from_pruning(visual_token_num):
            visual_token_num = cfg.budget(n)
        frame_budgets = [None if k is None else min(k, n) for k in expand_budgets(visual_token_num, n_videos)]
        in_llm = method.stage == "in_llm"
        prune = [k is not None and not in_llm for k in frame_budgets]
        needs = method.needs if any(prune) else frozenset()
        if signals is None:
            signals = VideoSignals(tower(videos.flatten(0, 1), needs=tower_needs(needs)), t)
        signals = signals.frames  # features [V*T, 1 + N, D]
        projector = self.mm_projector
        proj_dtype = next(projector.parameters()).dtype
        patches = add_projected(VisionSignals(signals.features[:, 1:], **signals.values), projector, needs)

        features, kept, slots = [], [], []
        block = t * (1 + n)  # the unpruned video block: each frame's [CLS] token, then its patches
        for i, k in enumerate(frame_budgets):
            rows = slice(i * t, (i + 1) * t)
            if not prune[i]:
                tokens = signals.features[rows]  # [T, 1 + N, D]: each frame's [CLS] row, then its patches
                features.append(projector(tokens.to(proj_dtype)).flatten(0, 1))  # -> [T * (1 + N), H]
                kept.append(None)
                slots.append((block, None))
                continue
            frames = patches.index(rows)  # T frames of N patches
            if cfg.video_mode == "temporal":
                projected, indices, merged = self._select_temporal(method, cfg.args, frames, t * k)
                frame, patch = indices.cpu() // n, indices.cpu() % n  # f * N + p
            else:
                projected, indices, merged = self._select_per_frame(method, cfg.args, frames, k)
                frame = torch.arange(indices.shape[0])[:, None].expand_as(indices.cpu()).flatten()
                patch = indices.cpu().flatten()
            offsets = frame * (1 + n) + 1 + patch  # [T * K] the kept patches' offsets in the unpruned block
            if merged or len(offsets) != projected.shape[0]:
                offsets = torch.full((projected.shape[0],), -1, dtype=torch.long)  # merged tokens: at no slot
            features.append(projected)
            kept.append(indices)
            slots.append((block, offsets))
        budgets = [None if k is None else t * k for k in frame_budgets]
        return EncodedVisuals(features=features, kept_indices=kept, num_patches=n, budgets=budgets,
                              frames=[t] * n_videos, frame_budgets=frame_budgets, unpruned_slots=slots)

    def _project(self, selection, frames: VisionSignals) -> torch.Tensor:
        """The selection's tokens through the projector: [B, K, H] (only kept tokens are projected)."""
        if selection.tokens is not None:  # merging methods bring their own tokens
            return self.mm_projector(selection.tokens.to(next(self.mm_projector.parameters()).dtype))
        if frames.projected is not None:  # already projected (DivPrune)
            return gather_tokens(frames.projected, selection.indices)
        tokens = gather_tokens(frames.features, selection.indices)  # [B, N, D] -> [B, K, D]
        return self.mm_projector(tokens.to(next(self.mm_projector.parameters()).dtype))

    def _select_per_frame(self, method, args: dict, frames: VisionSignals, k: int):
        """K tokens of every frame, each frame scored on its own: -> ([T * K, H], kept [T, M], merged)."""
        t, n = frames.features.shape[:2]
        if k >= n:
            indices = torch.arange(n, device=frames.features.device).expand(t, n)
            tokens = gather_tokens(frames.features, indices)
            return self.mm_projector(tokens.to(next(self.mm_projector.parameters()).dtype)).flatten(0, 1), indices, \
                False
        selection = method.select(frames, k, **args)  # frames are a batch of T: one selection per frame
        return self._project(selection, frames).flatten(0, 1), selection.indices, selection.tokens is not None

    def _select_temporal(self, method, args: dict, frames: VisionSignals, total: int):
        """`total` tokens chosen jointly over all frames: -> ([total, H], kept [total] as f * N + p, merged)."""
        t, n = frames.features.shape[:2]
        frame = torch.arange(t).repeat_interleave(n)
        patch = torch.arange(n).repeat(t)
        candidates = frames.gather(frame, patch)  # one candidate set of T * N patches, frame-major
        selection = method.select(candidates, total, **args)  # indices [1, total] into f * N + p
        return self._project(selection, candidates)[0], selection.indices[0], selection.tokens is not None

    # ---- splice -------------------------------------------------------------------------------
    def prepare_multimodal_inputs(
        self,
        input_ids: torch.LongTensor,
        images: torch.Tensor | Sequence[torch.Tensor] | None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        visual_token_num: VisualTokenNum = FROM_PRUNING,
        padding_side: str = "left",
        signals: VisionSignals | VideoSignals | None = None,
        image_sizes=None,
        encoded: EncodedImages | None = None,
        pruning: PruningConfig | None = None,
        truncate_prompts: bool = False,
        texts=None,
    ) -> MultimodalInputs:
        """Replace every `<image>` and `<video>` placeholder of input_ids [B, L] by its visual tokens.

        `texts` (the question per row) reaches LLaVA's image path, for methods that read it; a video
        prompt with such a method is refused (see `encode_videos`).

        `images`: one entry per placeholder in reading order, [3, S, S] for an image and [T, 3, S, S]
        for a video. `signals` from `video_signals` replaces the videos of video-only prompts (a K
        sweep runs the tower once). Prompts without `<video>` take LLaVA's path unchanged.
        """
        is_video = input_ids == VIDEO_TOKEN_INDEX
        if attention_mask is not None:
            is_video = is_video & attention_mask.bool()
        if encoded is None and not bool(is_video.any()):
            return super().prepare_multimodal_inputs(
                input_ids, images, attention_mask, labels, visual_token_num, padding_side, signals=signals,
                image_sizes=image_sizes, pruning=pruning, truncate_prompts=truncate_prompts, texts=texts)
        ids = input_ids.masked_fill(input_ids == VIDEO_TOKEN_INDEX, IMAGE_TOKEN_INDEX)
        if encoded is None and signals is not None:
            encoded = self._encode_from_signals(input_ids, is_video, signals, visual_token_num, pruning)
        elif encoded is None:
            encoded = self.encode_visuals(input_ids, images, attention_mask, visual_token_num, pruning)
        max_len = getattr(self.config, "tokenizer_model_max_length", None) or \
            getattr(self.config, "max_position_embeddings", None)
        return self.splice(ids, encoded.features, self.get_input_embeddings(), attention_mask, labels,
                           padding_side, max_len, truncate_prompts, encoded,
                           position_mode=self._pruning(pruning).position_mode)

    def _encode_from_signals(self, input_ids, is_video, signals, visual_token_num, pruning) -> EncodedVisuals:
        """Video-only prompts from a `video_signals` run (one per `<video>`, reading order)."""
        if not isinstance(signals, VideoSignals):
            raise ValueError("prompts with <video> take vision_signals from model.video_signals(videos)")
        if bool((input_ids == IMAGE_TOKEN_INDEX).any()):
            raise ValueError("vision_signals with <video> serve video-only prompts; pass images and videos as images")
        count = int(is_video.sum())
        if signals.num_videos != count:
            raise ValueError(f"the prompts hold {count} <video> placeholders but signals for "
                             f"{signals.num_videos} videos were given")
        if not _from_pruning(visual_token_num):
            visual_token_num = expand_budgets(visual_token_num, count)
        return self.encode_videos(None, visual_token_num, pruning=pruning, signals=signals)

    @torch.no_grad()
    def encode_visuals(
        self,
        input_ids: torch.LongTensor,
        items: torch.Tensor | Sequence[torch.Tensor] | None,
        attention_mask: torch.Tensor | None = None,
        visual_token_num: VisualTokenNum = FROM_PRUNING,
        pruning: PruningConfig | None = None,
    ) -> EncodedVisuals:
        """Encode the pictures and videos of a batch, one per placeholder in reading order."""
        keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        marks = input_ids[keep & ((input_ids == IMAGE_TOKEN_INDEX) | (input_ids == VIDEO_TOKEN_INDEX))]
        kinds = (marks == VIDEO_TOKEN_INDEX).tolist()  # reading order (row by row)
        items = [] if items is None else list(items)
        if len(items) != len(kinds):
            raise ValueError(f"the prompts hold {len(kinds)} <image>/<video> placeholders "
                             f"({sum(kinds)} videos) but {len(items)} images/videos were given")
        for i, (item, video) in enumerate(zip(items, kinds)):
            want = 4 if video else 3
            if item.ndim == 4 and not video and item.shape[0] == 1:
                items[i] = item = item[0]
            if item.ndim != want:
                what = "a video [T, 3, S, S]" if video else "an image [3, S, S]"
                raise ValueError(f"placeholder {i} is a {'<video>' if video else '<image>'} and needs {what}, "
                                 f"got shape {list(item.shape)}")
        budgets = (None if _from_pruning(visual_token_num) else expand_budgets(visual_token_num, len(items)))
        pick = lambda flag: [i for i, v in enumerate(kinds) if v == flag]  # noqa: E731
        image_rows, video_rows = pick(False), pick(True)
        for_rows = lambda rows: visual_token_num if budgets is None else [budgets[i] for i in rows]  # noqa: E731
        out = EncodedVisuals(features=[None] * len(items), kept_indices=[None] * len(items),
                             num_patches=self.get_vision_tower().num_patches, budgets=[None] * len(items),
                             frames=[None] * len(items), frame_budgets=[None] * len(items),
                             unpruned_slots=[None] * len(items))
        if image_rows:
            enc = self.encode_images(torch.stack([items[i] for i in image_rows]), for_rows(image_rows),
                                     pruning=pruning)
            for j, i in enumerate(image_rows):
                out.features[i], out.kept_indices[i], out.budgets[i] = enc.features[j], enc.kept_indices[j], \
                    enc.budgets[j]
                out.unpruned_slots[i] = enc.unpruned_slots[j]
        if video_rows:
            shapes = {tuple(items[i].shape) for i in video_rows}
            if len(shapes) > 1:
                raise ValueError(f"the videos of a batch must have the same frames and size, got {sorted(shapes)}")
            enc = self.encode_videos(torch.stack([items[i] for i in video_rows]), for_rows(video_rows),
                                     pruning=pruning)
            for j, i in enumerate(video_rows):
                out.features[i], out.kept_indices[i], out.budgets[i] = enc.features[j], enc.kept_indices[j], \
                    enc.budgets[j]
                out.unpruned_slots[i] = enc.unpruned_slots[j]
                out.frames[i], out.frame_budgets[i] = enc.frames[j], enc.frame_budgets[j]
        return out
