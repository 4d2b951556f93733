"""LLaVA-NeXT pruning by value: our `faithful` and `paper` paths against a reference built from
transformers' own LlavaNext classes.

The reference never touches our selection code or our attention probe:
- the llava-hf checkpoint (our tiny NeXT, converted and saved) is loaded by transformers'
  `LlavaNextForConditionalGeneration.from_pretrained`, as it comes (SDPA), for the features, the
  projector, the packing and the language model;
- the same checkpoint loaded with eager attention runs its CLIPVisionModel on the same pixel views
  with `output_attentions=True`, and the score of a patch is the head-mean [CLS] row of the eager
  attention weights of the selected layer;
- the LLaVA-NeXT token order (base view, then the merged grid unpadded row by row, a newline per
  row) comes from transformers' `pack_image_features`, run on CLIP features with extra channels
  (score, view, newline flag) so that each candidate's score and place can be read back;
- the top K candidates (with a clear gap to the next score, checked) are kept in that order with
  the newline of every grid row that keeps a token; the kept tokens go through the HF projector,
  replace the image tokens of the HF prompt, and the HF language model gives the logits.
At K above the candidates the reference is checked against transformers' own `get_image_features`.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from PIL import Image

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.pruning import PruningConfig
from llava.model.hf_layout import to_hf_model
from oracle import REPO

SCENE = REPO / "assets" / "samples" / "scene.png"
# (width, height): landscape (grid 2x1, columns unpadded), portrait (1x2, rows unpadded),
# square (1x2, rows unpadded), tall (1x3, columns unpadded).
SIZES = [(400, 300), (300, 500), (336, 336), (250, 900)]
ALL, ALL_BUT_ONE = "all", "all but one"  # K = N, N - 1 for N base + unpadded grid candidates
ABOVE = 10_000  # K above N: the unpruned model
BUDGETS = [1, 58, 300, ALL_BUT_ONE, ALL, ABOVE]
FEATURE_TOL = dict(atol=1e-5, rtol=0)


class HFReference(NamedTuple):
    """transformers' LlavaNext as loaded by default, and its vision tower loaded with eager attention."""

    model: object  # LlavaNextForConditionalGeneration (SDPA)
    eager_tower: object  # CLIPVisionModel (eager), the same weights


@pytest.fixture(scope="module")
def hf_next(next_model, tmp_path_factory) -> HFReference:
    """transformers' LlavaNextForConditionalGeneration loaded from the llava-hf layout, twice."""
    from transformers import LlavaNextForConditionalGeneration

    _, model, _, _ = next_model
    dest = tmp_path_factory.mktemp("next-hf") / "llava-v1.6-tiny-hf"
    to_hf_model(model).save_pretrained(dest)
    hf = LlavaNextForConditionalGeneration.from_pretrained(dest).eval()
    eager = LlavaNextForConditionalGeneration.from_pretrained(dest, attn_implementation="eager").eval()
    tower = eager.model.vision_tower
    assert tower.config._attn_implementation == "eager"
    # Eager attention's features differ from SDPA's by a few fp32 ulps (about 4e-6 at |x| ~ 10,
    # 1.7e-5 after the projector), so features come from the model as loaded and the eager
    # tower gives only the attention weights.
    return HFReference(hf, tower)


def _image(size) -> Image.Image:
    return Image.open(SCENE).convert("RGB").resize(size)


def _prompt(tokenizer, question="What is in the image?") -> torch.Tensor:
    return tokenizer_image_token(build_prompt(question, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX,
                                 return_tensors="pt")[None]


# ---- the reference ----------------------------------------------------------------------------------
class HFViews(NamedTuple):
    """What the reference tower gives for one image's views."""

    feats: torch.Tensor  # [V, N, D] CLIP patch features of the selected layer
    scores: torch.Tensor  # [V, N] head-mean [CLS] attention of that layer (eager weights)


@torch.no_grad()
def hf_views(ref: HFReference, views: torch.Tensor) -> HFViews:
    """views [V, 3, S, S] -> features and scores of the selected layer."""
    hf = ref.model
    layer = hf.config.vision_feature_layer
    assert hf.config.vision_feature_select_strategy == "default"  # [CLS] dropped, as in LLaVA
    hidden = hf.model.vision_tower(views, output_hidden_states=True).hidden_states
    n_layers = len(hidden) - 1
    hs_index = layer % (n_layers + 1)  # hidden_states[i] is the output of encoder layer i - 1
    attentions = ref.eager_tower(views, output_attentions=True).attentions
    assert len(attentions) == n_layers
    return HFViews(
        feats=hidden[hs_index][:, 1:],  # [V, 1 + N, D] -> [V, N, D]
        scores=attentions[hs_index - 1][:, :, 0, 1:].mean(dim=1),  # [V, heads, 1 + N, 1 + N] -> [V, N]
    )


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest of scores [..., N] along the last axis, order not kept.

    The K-th and (K+1)-th scores must differ well beyond fp32 noise (our probe and the eager
    weights agree to ~2e-9 on scores ~1e-3), so that the kept set is a property of the model,
    not of rounding.
    """
    values, indices = scores.sort(dim=-1, descending=True)
    if k < scores.shape[-1]:
        gap = (values[..., k - 1] - values[..., k]).min().item()
        assert gap > 2e-8, f"K={k} falls between near-equal scores (gap {gap:.1e}); pick another K"
    return indices[..., :k]


@torch.no_grad()
def hf_pack(ref: HFReference, values: torch.Tensor, hw: tuple[int, int], newline: bool):
    """LLaVA-NeXT's token order of one image by transformers' own `pack_image_features`.

    values [V, N, C] per-patch channels, hw the image's (height, width) as llava-hf takes it
    -> packed [T, C] (newline slots carry zeros) and is_newline [T] bool. A flag channel marks the
    newlines, which `pack_image_features` inserts as its `image_newline` vector.
    """
    flag = torch.zeros(*values.shape[:2], 1, dtype=values.dtype)
    channels = torch.cat([values, flag], dim=-1)  # [V, N, C + 1]
    marker = torch.zeros(channels.shape[-1], dtype=values.dtype)
    marker[-1] = 1.0
    (packed,), _ = ref.model.model.pack_image_features([channels], torch.tensor([hw]), "default",
                                                       image_newline=marker if newline else None)
    return packed[:, :-1], packed[:, -1] == 1.0


@torch.no_grad()
def hf_faithful(ref: HFReference, out: HFViews, size: tuple[int, int], k: int):
    """One image, one budget K over its base and unpadded grid tokens (size is (width, height)).

    -> kept positions [M] in LLaVA-NeXT's unpruned order and the visual features [M, H] to splice.
    """
    hf = ref.model
    n_views, n, d = out.feats.shape
    view_id = torch.arange(n_views, dtype=out.feats.dtype)[:, None, None].expand(-1, n, 1)
    packed, is_newline = hf_pack(ref, torch.cat([out.feats, out.scores[..., None], view_id], dim=-1),
                                 (size[1], size[0]), newline=True)  # [T, D + 2]
    cand = torch.nonzero(~is_newline).flatten()  # base patches, then grid patches row by row
    top = top_k(packed[cand, d], min(k, len(cand)))
    chosen = cand[top].sort().values
    # The grid row of a slot is the number of newlines before it; base-view slots have none.
    row = torch.cumsum(is_newline.long(), 0) - is_newline.long()
    is_grid = (packed[:, d + 1] > 0) & ~is_newline
    rows_kept = set(row[chosen[is_grid[chosen]]].tolist())
    newlines = [p for p in torch.nonzero(is_newline).flatten().tolist() if row[p].item() in rows_kept]
    keep = torch.cat([chosen, torch.tensor(newlines, dtype=torch.long)]).sort().values
    token = ~is_newline[keep]
    visual = hf.model.image_newline.expand(len(keep), -1).clone()  # [M, H]
    visual[token] = hf.model.multi_modal_projector(packed[keep[token], :d])  # [K, D] -> [K, H]
    return keep, visual


@torch.no_grad()
def hf_paper(ref: HFReference, out: HFViews, k: int):
    """FasterVLM's NeXT setting: the top K of every view by its own [CLS] row, the 2x2 grid merged
    without unpad or newline (`pack_image_features` given the 672 x 672 canvas, whose unpad is a no-op)."""
    hf = ref.model
    n_views, n, d = out.feats.shape
    assert n_views == 5
    mask = torch.zeros_like(out.scores)
    mask.scatter_(1, top_k(out.scores, k), 1.0)  # [V, N]
    side = 2 * hf.config.vision_config.image_size
    packed, is_newline = hf_pack(ref, torch.cat([out.feats, mask[..., None]], dim=-1), (side, side), newline=False)
    assert not is_newline.any() and len(packed) == n_views * n
    keep = torch.nonzero(packed[:, d] == 1.0).flatten()
    return keep, hf.model.multi_modal_projector(packed[keep, :d])  # [5K, D] -> [5K, H]


def hf_ids(ref: HFReference, ids: torch.Tensor, n_visual: int) -> torch.Tensor:
    """ids [1, L] with one IMAGE_TOKEN_INDEX -> llava-hf ids [1, L - 1 + n_visual] (image token repeated)."""
    row = []
    for t in ids[0].tolist():
        row += [ref.model.config.image_token_id] * n_visual if t == IMAGE_TOKEN_INDEX else [t]
    return torch.tensor([row])


@torch.no_grad()
def hf_last_logits(ref: HFReference, ids: torch.Tensor, visual: torch.Tensor, vocab: int) -> torch.Tensor:
    """ids [1, L] with one IMAGE_TOKEN_INDEX, visual [M, H] -> logits of the last position [vocab]."""
    hf = ref.model
    full_ids = hf_ids(ref, ids, visual.shape[0])
    embeds = hf.get_input_embeddings()(full_ids)  # [1, L', H]
    embeds = embeds.masked_scatter((full_ids == hf.config.image_token_id)[..., None], visual.to(embeds.dtype))
    return hf(inputs_embeds=embeds, logits_to_keep=1).logits[0, -1, :vocab]


# ---- the tests ----------------------------------------------------------------------------------------
def _check_one(model, ref: HFReference, ids, pixels, size, k, signals, out: HFViews, logits: str | None):
    """Ours vs the reference for one image and one K: kept positions, spliced features, last logits.

    logits 'public': ours from `model(input_ids, images=...)`; 'spliced': from the inputs that
    `prepare_multimodal_inputs` spliced with the tower's signals reused (the K sweep's path);
    None: no language-model run. Returns the reference's kept positions and visual features.
    """
    mm = model.prepare_multimodal_inputs(ids, None, image_sizes=[size], visual_token_num=k, signals=signals)
    ref_keep, ref_visual = (hf_paper(ref, out, k) if model.pruning.anyres_mode == "paper"
                            else hf_faithful(ref, out, size, k))
    kept = mm.encoded.kept_indices[0]
    if kept is None:  # nothing pruned: every slot of the unpruned order
        kept = torch.arange(mm.encoded.token_counts[0])
    assert kept.tolist() == ref_keep.tolist(), (size, k)
    torch.testing.assert_close(mm.encoded.features[0], ref_visual, **FEATURE_TOL)
    (start, end), = mm.image_spans[0]
    torch.testing.assert_close(mm.inputs_embeds[0, start:end], ref_visual, **FEATURE_TOL)
    if logits is None:
        return ref_keep, ref_visual
    if logits == "public":
        ours = model(input_ids=ids, images=pixels, image_sizes=[size], visual_token_num=k, logits_to_keep=1)
    else:
        ours = model(inputs_embeds=mm.inputs_embeds, attention_mask=mm.attention_mask,
                     position_ids=mm.position_ids, logits_to_keep=1)
    theirs = hf_last_logits(ref, ids, ref_visual, model.config.vocab_size)
    torch.testing.assert_close(ours.logits[0, -1], theirs, atol=1e-4, rtol=0)
    return ref_keep, ref_visual


@pytest.mark.parametrize("size", SIZES)
def test_faithful_equals_hf_reference(next_model, hf_next, size):
    tokenizer, model, processor, _ = next_model
    with model.pruning_config(PruningConfig(anyres_mode="faithful")):
        ids = _prompt(tokenizer)
        pixels = process_images([_image(size)], processor, model.config)
        signals = model.vision_signals(pixels)
        out = hf_views(hf_next, pixels[0])
        _, is_newline = hf_pack(hf_next, torch.zeros(*out.scores.shape, 1), (size[1], size[0]), newline=True)
        n_cand, n_rows = int((~is_newline).sum()), int(is_newline.sum())
        for k in BUDGETS:
            k = {ALL: n_cand, ALL_BUT_ONE: n_cand - 1}.get(k, k)
            # No language-model run at K = N - 1 and N (long sequences); it runs at K above N.
            mode = "public" if k == 58 else None if k in (n_cand, n_cand - 1) else "spliced"
            keep, visual = _check_one(model, hf_next, ids, pixels, size, k, signals, out, logits=mode)
            n_tokens = min(k, n_cand)
            assert int((~is_newline[keep]).sum()) == n_tokens and len(keep) <= n_tokens + n_rows
        # K above the candidates is the unpruned model: the reference then equals transformers' own
        # LLaVA-NeXT features (projector, unpad, newlines, base view first).
        assert len(keep) == n_cand + n_rows
        image_features = hf_next.model.model.get_image_features(
            pixels, torch.tensor([[size[1], size[0]]]), return_dict=True).pooler_output  # llava-hf: (height, width)
        torch.testing.assert_close(visual, image_features[0], atol=1e-5, rtol=0)


def test_faithful_batch_of_two_equals_hf_reference(next_model, hf_next):
    """Two prompts (different lengths, left padding), two image sizes, two budgets in one call."""
    tokenizer, model, processor, _ = next_model
    with model.pruning_config(PruningConfig(anyres_mode="faithful")):
        sizes, budgets = [(400, 300), (250, 900)], [58, 300]
        rows = [_prompt(tokenizer, q)[0] for q in ("What?", "Describe this picture in detail please.")]
        width = max(len(r) for r in rows)
        ids = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
        mask = torch.stack([torch.arange(width) >= width - len(r) for r in rows]).long()
        pixels = [process_images([_image(s)], processor, model.config)[0] for s in sizes]  # 3 and 4 views
        assert [p.shape[0] for p in pixels] == [3, 4]

        gen = model.generate(ids, images=pixels, image_sizes=sizes, attention_mask=mask, visual_token_num=budgets,
                             max_new_tokens=1, do_sample=False, output_logits=True, return_dict_in_generate=True)
        encoded = model.last_multimodal
        mm = model.prepare_multimodal_inputs(ids, None, mask, visual_token_num=budgets, padding_side="left",
                                             image_sizes=sizes, signals=model.vision_signals(pixels))
        for b, (size, k) in enumerate(zip(sizes, budgets)):
            ref_keep, ref_visual = hf_faithful(hf_next, hf_views(hf_next, pixels[b]), size, k)
            assert encoded.kept_indices[b].tolist() == ref_keep.tolist()
            assert mm.encoded.kept_indices[b].tolist() == ref_keep.tolist()
            torch.testing.assert_close(encoded.features[b], ref_visual, **FEATURE_TOL)
            (start, end), = mm.image_spans[b]
            torch.testing.assert_close(mm.inputs_embeds[b, start:end], ref_visual, **FEATURE_TOL)
            theirs = hf_last_logits(hf_next, rows[b][None], ref_visual, model.config.vocab_size)
            torch.testing.assert_close(gen.logits[0][b, : model.config.vocab_size], theirs, atol=1e-4, rtol=0)
            assert gen.sequences[b, -1].item() == theirs.argmax().item()


@pytest.mark.parametrize("size", [(400, 300), (250, 900)])
def test_paper_equals_hf_reference(next_model, hf_next, size):
    """'paper' mode: 5 x K tokens, the top K of each view, in the 'spatial' order."""
    tokenizer, model, processor, _ = next_model
    with model.pruning_config(PruningConfig(anyres_mode="paper")):  # K is passed per call
        ids = _prompt(tokenizer)
        pixels = process_images([_image(size)], processor, model.config, anyres_mode="paper")
        assert pixels.shape[1] == 5  # fixed 2x2 grid whatever the aspect ratio
        signals = model.vision_signals(pixels)
        out = hf_views(hf_next, pixels[0])
        for k in (1, 29, 100):
            keep, _ = _check_one(model, hf_next, ids, pixels, size, k, signals, out,
                                 logits="public" if k == 29 else "spliced")
            assert len(keep) == 5 * k
