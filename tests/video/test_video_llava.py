"""Video-LLaVA against transformers' own VideoLlavaForConditionalGeneration on the same saved folder:
unpruned logits and greedy tokens on batches of images and videos, and per-frame [CLS] pruning
against the [CLS] rows of an eager tower's attention maps."""

from __future__ import annotations

import pytest
import torch

from llava.constants import IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX
from llava.model.builder import read_config
from llava.model.families import family_of
from llava.model.video_llava import VideoLlavaForPruning, tokenizer_visual_token
from llava.pruning import PruningConfig
from llava.pruning.base import topk_raster

from video_helpers import FRAMES

PROMPTS = [
    "USER: <video>\nWhat moves in the video? ASSISTANT:",
    "USER: <image>\nCompare the picture with <video>\nthis clip. ASSISTANT:",
]


@pytest.fixture(scope="module")
def pictures(video_llava, sample_images):
    from llava.mm_utils import process_images

    _, model, processor, _ = video_llava
    return process_images(sample_images[:2], processor, model.config)  # [2, 3, 224, 224]


@pytest.fixture(scope="module")
def batch(video_llava, pictures, clips):
    """Our ids (left-aligned, right padded), the visual items in reading order, and per-row HF inputs."""
    tokenizer, model, _, _ = video_llava
    rows = [tokenizer_visual_token(p, tokenizer) for p in PROMPTS]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, :len(row)] = torch.tensor(row)
        mask[b, :len(row)] = 1
    items = [clips[0], pictures[0], clips[1]]  # reading order over the three prompts
    return ids, mask, items, rows


def hf_row(hf, row: list[int], pixels: list[torch.Tensor], frames: list[torch.Tensor]) -> dict:
    """One prompt as transformers' processor would give it: every placeholder expanded to its tokens."""
    cfg = hf.config
    ids = []
    for t in row:
        if t == IMAGE_TOKEN_INDEX:
            ids += [cfg.image_token_id] * cfg.image_seq_length
        elif t == VIDEO_TOKEN_INDEX:
            ids += [cfg.video_token_id] * cfg.video_seq_length
        else:
            ids.append(t)
    out = {"input_ids": torch.tensor([ids])}
    if pixels:
        out["pixel_values"] = torch.stack(pixels)
    if frames:
        out["pixel_values_videos"] = torch.stack(frames)
    return out


def hf_inputs(hf, batch):
    _, _, items, rows = batch
    per_row, it = [], iter(items)
    for row in rows:
        pixels, frames = [], []
        for t in row:
            if t == IMAGE_TOKEN_INDEX:
                pixels.append(next(it))
            elif t == VIDEO_TOKEN_INDEX:
                frames.append(next(it))
        per_row.append(hf_row(hf, row, pixels, frames))
    return per_row


def test_the_folder_is_the_video_family_and_builds_two_towers(video_dir, video_llava):
    raw = read_config(str(video_dir))
    assert family_of(raw, str(video_dir)).name == "video-llava-hf"
    model = video_llava[1]
    assert isinstance(model, VideoLlavaForPruning) and model.num_frames == FRAMES
    image, video = model.get_vision_tower(), model.get_video_tower()
    assert image.num_patches == video.num_patches == 256
    assert (image.select_feature, video.select_feature) == ("patch", "cls_patch")
    assert not torch.equal(image.vision_tower.embeddings.patch_embedding.weight,
                           video.vision_tower.embeddings.patch_embedding.weight)


def test_unpruned_logits_equal_transformers_on_a_batch_of_images_and_videos(video_llava, hf_video_llava, batch):
    model = video_llava[1]
    ids, mask, items, _ = batch
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask, images=items, pruning=PruningConfig()).logits
        for b, inputs in enumerate(hf_inputs(hf_video_llava, batch)):
            ref = hf_video_llava(**inputs).logits[0]  # [L_b, V]
            torch.testing.assert_close(ours[b, :ref.shape[0]], ref, atol=1e-4, rtol=1e-4)
    spans = [e - s for s, e in model.prepare_multimodal_inputs(ids, items, mask, padding_side="right").image_spans[0]]
    assert spans == [FRAMES * 257]  # every frame's [CLS] and 256 patches, unpruned


def test_greedy_tokens_equal_transformers(video_llava, hf_video_llava, batch):
    model = video_llava[1]
    ids, mask, items, rows = batch
    ours = model.generate(ids, images=items, attention_mask=mask, max_new_tokens=4, do_sample=False,
                          pruning=PruningConfig())
    for b, inputs in enumerate(hf_inputs(hf_video_llava, batch)):
        ref = hf_video_llava.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1]:]
        assert len(ref) >= 1
        assert ours[b][:len(ref)].tolist() == ref.tolist(), f"row {b}"


def eager_cls_rows(hf, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference: [CLS] rows [T, N] of the selected layer's attention map (head mean) of an eager
    tower, and that layer's hidden states [T, 1 + N, D], from transformers' CLIPVisionModel."""
    tower = hf.model.video_tower
    tower.set_attn_implementation("eager")
    with torch.no_grad():
        out = tower(frames, output_attentions=True, output_hidden_states=True)
    layer = hf.config.vision_feature_layer  # -2: hidden_states[-2] is the output of attention layer -2
    return out.attentions[layer][:, :, 0, 1:].mean(dim=1), out.hidden_states[layer]


@pytest.mark.parametrize("k", [26, 64])
def test_fastervlm_keeps_each_frames_own_top_k_by_its_cls_row(video_llava, hf_video_llava, clips, k):
    model = video_llava[1]
    cfg = PruningConfig(method="fastervlm", visual_token_num=k)
    enc = model.encode_videos(torch.stack(clips[:2]), pruning=cfg)
    for v in range(2):
        scores, hidden = eager_cls_rows(hf_video_llava, clips[v])
        expected = topk_raster(scores, k)  # [T, K], raster order within each frame
        assert torch.equal(enc.kept_indices[v], expected)
        tokens = torch.stack([hidden[f, 1 + expected[f]] for f in range(FRAMES)])  # [T, K, D], no [CLS]
        with torch.no_grad():
            projected = hf_video_llava.model.multi_modal_projector(tokens).flatten(0, 1)
        torch.testing.assert_close(enc.features[v], projected, atol=1e-5, rtol=1e-5)
    assert enc.frames == [FRAMES, FRAMES] and enc.frame_budgets == [k, k] and enc.budgets == [FRAMES * k] * 2
    assert enc.token_counts == [FRAMES * k] * 2


def test_generate_at_k_per_frame_gives_t_times_k_video_tokens(video_llava, batch):
    model = video_llava[1]
    ids, mask, items, _ = batch
    model.generate(ids, images=items, attention_mask=mask, max_new_tokens=2, do_sample=False,
                   pruning=PruningConfig(visual_token_num=13))
    mm = model.last_multimodal
    assert mm.frames == [FRAMES, None, FRAMES]
    assert mm.frame_budgets == [13, None, 13]
    assert mm.token_counts == [FRAMES * 13, 13, FRAMES * 13]  # images: K as in LLaVA


def test_temporal_mode_chooses_t_times_k_jointly_over_all_frames(video_llava, hf_video_llava, clips):
    model = video_llava[1]
    k = 16
    enc = model.encode_videos(clips[0][None], pruning=PruningConfig(visual_token_num=k, video_mode="temporal"))
    scores, hidden = eager_cls_rows(hf_video_llava, clips[0])
    expected = topk_raster(scores.flatten()[None], FRAMES * k)[0]  # f * N + p, frame order then raster
    assert torch.equal(enc.kept_indices[0], expected)
    per_frame = torch.bincount(expected // 256, minlength=FRAMES)
    assert int(per_frame.sum()) == FRAMES * k and enc.token_counts == [FRAMES * k]
    tokens = hidden[:, 1:].flatten(0, 1)[expected]
    with torch.no_grad():
        torch.testing.assert_close(enc.features[0], hf_video_llava.model.multi_modal_projector(tokens),
                                   atol=1e-5, rtol=1e-5)


def test_k_at_or_above_the_patches_keeps_every_patch_without_cls(video_llava, clips):
    model = video_llava[1]
    enc = model.encode_videos(clips[0][None], pruning=PruningConfig(visual_token_num=300))
    assert enc.token_counts == [FRAMES * 256] and enc.frame_budgets == [256]
    assert torch.equal(enc.kept_indices[0], torch.arange(256).expand(FRAMES, 256))


def test_fastv_prunes_the_video_block_to_t_times_k_inside_the_llm(video_llava, batch):
    model = video_llava[1]
    ids, mask, items, _ = batch
    model.generate(ids, images=items, attention_mask=mask, max_new_tokens=2, do_sample=False,
                   pruning=PruningConfig(method="fastv", visual_token_num=20))
    mm = model.last_multimodal
    assert mm.token_counts == [FRAMES * 257, 256, FRAMES * 257]  # all tokens enter the LLM
    assert mm.in_llm["kept_after_layer"] == [FRAMES * 20, 20, FRAMES * 20]


def test_placeholders_and_items_must_agree(video_llava, clips, pictures):
    tokenizer, model, _, _ = video_llava
    ids = tokenizer_visual_token("USER: <video>\nWhat? ASSISTANT:", tokenizer, return_tensors="pt")[None]
    with pytest.raises(ValueError, match=r"placeholder 0 is a <video> and needs a video \[T, 3, S, S\]"):
        model(input_ids=ids, images=[pictures[0]])
    with pytest.raises(ValueError, match=r"hold 1 <image>/<video> placeholders \(1 videos\) but 2"):
        model(input_ids=ids, images=[clips[0], clips[1]])


def test_tokenizer_marks_images_and_videos_in_reading_order(video_llava):
    tokenizer = video_llava[0]
    ids = tokenizer_visual_token("a <image> b <video> c <image><video>", tokenizer)
    marks = [t for t in ids if t < 0]
    assert marks == [IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX, IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX]
    plain = tokenizer("a  b  c ").input_ids
    assert [t for t in ids if t >= 0][:1] == plain[:1]  # one BOS


def test_dart_and_pdrop_run_on_the_whole_video_block(video_llava, clips):
    from llava.pruning.dart import dart_topk

    tokenizer, model, _, _ = video_llava
    ids = tokenizer_visual_token("USER: <video>\nWhat? ASSISTANT:", tokenizer, return_tensors="pt")[None]
    n = FRAMES * 257
    model.generate(ids, images=[clips[0]], max_new_tokens=2, do_sample=False,
                   pruning=PruningConfig(method="dart", visual_token_num=10))
    assert model.last_multimodal.in_llm["kept_after_layer"] == [4 + 8 * dart_topk(n, FRAMES * 10, 4, 4)]
    model.generate(ids, images=[clips[0]], max_new_tokens=2, do_sample=False,
                   pruning=PruningConfig(method="pdrop", method_args={"layers": (1, 2)}))
    assert model.last_multimodal.in_llm["kept_per_stage"] == [[n // 2, n // 4]]


def _rewrite_weights(src, dst, rename):
    """A copy of the checkpoint folder `src` whose tensors are renamed (or dropped, None) by `rename`."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = load_file(str(src / "model.safetensors"))
    renamed = {rename(k): v for k, v in weights.items() if rename(k) is not None}
    save_file(renamed, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_the_published_key_layout_loads_to_the_same_model(video_dir, video_llava, clips, tmp_path):
    """LanguageBind/Video-LLaVA-7B-hf stores its towers as `*_tower.vision_model.*` (older transformers)."""
    from llava.model.builder import load_pretrained_model

    def published(key):
        for tower in ("image_tower.", "video_tower."):
            if key.startswith(tower):
                return tower + "vision_model." + key[len(tower):]
        return key

    folder = _rewrite_weights(video_dir, tmp_path / "published", published)
    _, model, _, _ = load_pretrained_model(str(folder), device="cpu")
    cfg = PruningConfig(visual_token_num=32)
    ours, ref = model.encode_videos(clips[0][None], pruning=cfg), video_llava[1].encode_videos(clips[0][None],
                                                                                               pruning=cfg)
    assert torch.equal(ours.kept_indices[0], ref.kept_indices[0])
    torch.testing.assert_close(ours.features[0], ref.features[0], atol=0, rtol=0)


def test_a_missing_video_tower_tensor_is_refused_by_name(video_dir, tmp_path):
    from llava.model.builder import load_pretrained_model
    from llava.model.checkpoint_checks import CheckpointError

    gone = "video_tower.encoder.layers.1.self_attn.q_proj.weight"
    folder = _rewrite_weights(video_dir, tmp_path / "broken", lambda k: None if k == gone else k)
    with pytest.raises(CheckpointError, match=r"video_tower\.encoder\.layers\.1\.self_attn\.q_proj\.weight"):
        load_pretrained_model(str(folder), device="cpu")


@pytest.mark.parametrize("cfg", [PruningConfig(visual_token_num=13), PruningConfig(method="visionzip", visual_token_num=20),
                                 PruningConfig(), PruningConfig(method="fastv", visual_token_num=20)])
def test_one_tower_run_serves_every_budget(video_llava, clips, cfg):
    tokenizer, model, _, _ = video_llava
    ids = tokenizer_visual_token("USER: <video>\nWhat? ASSISTANT:", tokenizer, return_tensors="pt")
    ids = torch.stack([ids, ids])
    videos = torch.stack(clips[:2])
    signals = model.video_signals(videos, pruning=cfg)
    assert signals.num_videos == 2 and signals.num_frames == FRAMES
    direct = model.prepare_multimodal_inputs(ids, list(videos), pruning=cfg)
    reused = model.prepare_multimodal_inputs(ids, None, signals=signals.index([0, 1]), pruning=cfg)
    torch.testing.assert_close(reused.inputs_embeds, direct.inputs_embeds, atol=0, rtol=0)
    swapped = model.prepare_multimodal_inputs(ids, None, signals=signals.index([1, 0]), pruning=cfg)
    torch.testing.assert_close(swapped.inputs_embeds[0], direct.inputs_embeds[1], atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"hold 2 <video> placeholders but signals for 1 videos"):
        model.prepare_multimodal_inputs(ids, None, signals=signals.index([0]), pruning=cfg)


@pytest.mark.parametrize("mode", ["frame", "temporal"])
def test_position_mode_keep_gives_kept_frame_tokens_their_unpruned_positions(video_llava, batch, mode):
    """position_mode='keep' on a batch of images and videos: every kept token (a frame's patch: after its frame's
    [CLS] slot) sits at the position of the same token in the unpruned layout."""
    model = video_llava[1]
    ids, mask, items, _ = batch
    full = model.prepare_multimodal_inputs(ids, items, mask, padding_side="left",
                                           pruning=PruningConfig(position_mode="compact"))
    keep = PruningConfig(visual_token_num=13, position_mode="keep", video_mode=mode)
    pruned = model.prepare_multimodal_inputs(ids, items, mask, padding_side="left", pruning=keep)
    for b in range(ids.shape[0]):
        valid, full_valid = pruned.attention_mask[b].bool(), full.attention_mask[b].bool()
        pos, emb = pruned.position_ids[b][valid], pruned.inputs_embeds[b][valid]
        assert bool((pos.diff() > 0).all()) and pos[-1] == int(full_valid.sum()) - 1
        torch.testing.assert_close(emb, full.inputs_embeds[b][full_valid][pos], atol=1e-5, rtol=1e-5)


def test_position_mode_keep_refuses_merged_frame_tokens(video_llava, clips):
    """VisionZip's tokens per frame include [CLS] and merged ones, which stand at no slot of the unpruned block."""
    model = video_llava[1]
    ids = torch.tensor([[1, 2, VIDEO_TOKEN_INDEX, 3]])
    cfg = PruningConfig("visionzip", visual_token_num=16, position_mode="keep")
    with pytest.raises(ValueError, match="tokens at no slot of the unpruned layout"):
        model.prepare_multimodal_inputs(ids, [clips[0]], pruning=cfg)
    assert model.prepare_multimodal_inputs(ids, [clips[0]], pruning=cfg.replace(position_mode="compact")) \
        .inputs_embeds.shape[1] == 3 + FRAMES * 16
