"""LLaVA-NeXT (anyres): grid choice, HF LlavaNext equivalence, the original implementation, pruning modes."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from llava.anyres import grid_shape, select_best_resolution, token_layout
from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.hf_layout import to_hf_model
from llava.model.tiny import NEXT_PINPOINTS
from llava.pruning import PruningConfig
from oracle import REPO, require_oracle, run_oracle

SIZES = [(400, 300), (300, 500), (1000, 320), (336, 336), (250, 900)]
SCENE = REPO / "assets" / "samples" / "scene.png"

# (width, height) -> (columns, rows) of 336 crops under LLaVA-1.6's pinpoints, worked out by hand:
# the resolution that keeps most pixels wins, then the one wasting the least canvas, then the first.
GRID_TABLE = {
    (400, 300): (2, 1), (300, 500): (1, 2), (1000, 320): (3, 1), (336, 336): (1, 2),
    (250, 900): (1, 3), (2000, 1000): (2, 1), (640, 640): (2, 2), (320, 1100): (1, 3), (1300, 1200): (2, 2),
}


def _prompt(tokenizer, question="What is in the image?"):
    return tokenizer_image_token(build_prompt(question, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX,
                                 return_tensors="pt")[None]


def _image(size):
    return Image.open(SCENE).convert("RGB").resize(size)


@pytest.mark.parametrize("size,grid", sorted(GRID_TABLE.items()))
def test_grid_selection_table(size, grid):
    assert grid_shape(size, NEXT_PINPOINTS, 336) == grid


def test_grid_selection_and_preprocessing_equal_the_original(next_model):
    require_oracle()
    import random

    rng = random.Random(0)
    sizes = list(GRID_TABLE) + [(rng.randint(50, 2500), rng.randint(50, 2500)) for _ in range(300)]
    tokenizer, model, processor, _ = next_model
    job = """
import torch
from PIL import Image
from llava.mm_utils import select_best_resolution, process_anyres_image
from transformers import CLIPImageProcessor
proc = CLIPImageProcessor.from_pretrained(PAYLOAD["clip"])
pins = PAYLOAD["pins"]
RESULT = {"best": [list(select_best_resolution(tuple(s), pins)) for s in PAYLOAD["sizes"]], "pixels": []}
for s in PAYLOAD["few"]:
    img = Image.open(PAYLOAD["image"]).convert("RGB").resize(tuple(s))
    RESULT["pixels"].append(process_anyres_image(img, proc, pins).tolist())
"""
    few = SIZES[:3]
    out = run_oracle(job, {"clip": model.get_vision_tower().vision_tower_name, "pins": NEXT_PINPOINTS,
                           "sizes": sizes, "few": few, "image": str(SCENE)})
    assert [list(select_best_resolution(s, NEXT_PINPOINTS)) for s in sizes] == out["best"]
    for size, ref in zip(few, out["pixels"]):
        ours = process_images([_image(size)], processor, model.config)[0]
        assert torch.equal(ours, torch.tensor(ref))


@pytest.mark.parametrize("size", SIZES)
def test_unpruned_equals_hf_llava_next(next_model, size):
    tokenizer, model, processor, _ = next_model
    assert model.pruning == PruningConfig()  # unpruned, faithful
    hf = to_hf_model(model)
    ids = _prompt(tokenizer)
    image = _image(size)
    pixels = process_images([image], processor, model.config)
    mm = model.prepare_multimodal_inputs(ids, pixels, image_sizes=[image.size])
    n = mm.encoded.token_counts[0]
    cols, rows = grid_shape(size, NEXT_PINPOINTS, 336)
    assert pixels.shape[1] == 1 + cols * rows
    row = []
    for t in ids[0].tolist():
        row += [hf.config.image_token_id] * n if t == IMAGE_TOKEN_INDEX else [t]
    hf_ids = torch.tensor([row])
    hf_sizes = torch.tensor([[size[1], size[0]]])  # llava-hf takes (height, width)
    ours = model(input_ids=ids, images=pixels, image_sizes=[image.size]).logits
    theirs = hf(input_ids=hf_ids, pixel_values=pixels, image_sizes=hf_sizes).logits[..., : model.config.vocab_size]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    ours_gen = model.generate(ids, images=pixels, image_sizes=[image.size], max_new_tokens=8, do_sample=False)
    theirs_gen = hf.generate(input_ids=hf_ids, pixel_values=pixels, image_sizes=hf_sizes, max_new_tokens=8,
                             do_sample=False)[:, hf_ids.shape[1]:]
    assert ours_gen.tolist() == theirs_gen.tolist()


ORACLE_NEXT = """
import torch
from PIL import Image
from llava.model.builder import load_pretrained_model
from llava.mm_utils import tokenizer_image_token, process_images
from llava.conversation import conv_templates
from llava.constants import IMAGE_TOKEN_INDEX

torch.set_num_threads(2)
tok, model, proc, _ = load_pretrained_model(PAYLOAD["model"], None, "llava-v1.6-tiny", device="cpu")
model = model.float()
model.get_vision_tower().to(torch.float32)
conv = conv_templates["vicuna_v1"].copy()
conv.append_message(conv.roles[0], "<image>\\n" + PAYLOAD["question"])
conv.append_message(conv.roles[1], None)
ids = tokenizer_image_token(conv.get_prompt(), tok, IMAGE_TOKEN_INDEX, return_tensors="pt").unsqueeze(0)

def strip_bos(seq):
    seq = seq[0].tolist()
    return seq[1:] if seq and seq[0] == tok.bos_token_id else seq

RESULT = {"faithful": [], "paper": []}
for size in PAYLOAD["sizes"]:
    image = Image.open(PAYLOAD["image"]).convert("RGB").resize(tuple(size))
    pixels = process_images([image], proc, model.config)
    with torch.inference_mode():
        out = model.generate(ids, images=pixels.float(), image_sizes=[image.size], do_sample=False,
                             num_beams=1, max_new_tokens=PAYLOAD["max_new_tokens"], use_cache=True)
    RESULT["faithful"].append(strip_bos(out))

# FasterVLM's paper setting written out here: fixed 2x2 grid, per-view top-K by the view's own
# [CLS] attention (eager maps), 'spatial' merge without unpad/newline, projector on all tokens.
model.config.image_grid_pinpoints = [[672, 672]]
tower = model.get_vision_tower()
K = PAYLOAD["k"]
for size in PAYLOAD["sizes"]:
    image = Image.open(PAYLOAD["image"]).convert("RGB").resize(tuple(size))
    views = process_images([image], proc, model.config)[0]  # [5, 3, 336, 336]
    with torch.inference_mode():
        o = tower.vision_tower(views, output_hidden_states=True, output_attentions=True)
        feats = model.get_model().mm_projector(o.hidden_states[-2][:, 1:])  # [5, 576, H]
        scores = o.attentions[-2][:, :, 0, 1:].mean(dim=1)
        mask = torch.zeros_like(scores, dtype=torch.bool)
        mask.scatter_(1, scores.topk(K, dim=1).indices, True)
        base = feats[0][mask[0]]
        grid_f = feats[1:].view(2, 2, 24, 24, -1).permute(0, 2, 1, 3, 4).flatten(0, 3)
        grid_m = mask[1:].view(2, 2, 24, 24).permute(0, 2, 1, 3).flatten(0, 3)
        visual = torch.cat([base, grid_f[grid_m]])
        pos = (ids[0] == IMAGE_TOKEN_INDEX).nonzero()[0, 0].item()
        emb = model.get_model().embed_tokens
        text = ids[0][ids[0] != IMAGE_TOKEN_INDEX]
        embeds = torch.cat([emb(text[:pos]), visual, emb(text[pos:])])[None]
        out = super(type(model), model).generate(inputs_embeds=embeds, do_sample=False, num_beams=1,
                                                 max_new_tokens=PAYLOAD["max_new_tokens"], use_cache=True)
    RESULT["paper"].append({"ids": strip_bos(out), "visual": visual.shape[0]})
"""


def test_next_answers_equal_the_original_implementation(next_path, next_model):
    require_oracle()
    sizes = SIZES[:4]
    ref = run_oracle(ORACLE_NEXT, {"model": next_path, "image": str(SCENE), "sizes": sizes, "k": 29,
                                   "question": "Describe the image.", "max_new_tokens": 10})
    tokenizer, model, processor, _ = next_model
    ids = _prompt(tokenizer, "Describe the image.")
    for mode, k in (("faithful", None), ("paper", 29)):
        pruning = PruningConfig(visual_token_num=k, anyres_mode=mode)
        for n, size in enumerate(sizes):
            image = _image(size)
            pixels = process_images([image], processor, model.config, mode)
            out = model.generate(ids, images=pixels, image_sizes=[image.size], max_new_tokens=10, do_sample=False,
                                 pruning=pruning)
            expected = ref[mode][n]
            if mode == "paper":
                assert model.last_multimodal.token_counts == [expected["visual"]] == [5 * 29]
                expected = expected["ids"]
            assert out[0].tolist() == expected, (mode, size)


@pytest.mark.parametrize("size", SIZES)
def test_token_counts_in_both_modes(next_model, size):
    tokenizer, model, processor, _ = next_model
    image = _image(size)
    ids = _prompt(tokenizer)
    full = model.prepare_multimodal_inputs(ids, process_images([image], processor, model.config),
                                           image_sizes=[image.size], pruning=PruningConfig()).encoded.token_counts[0]
    cols, rows = grid_shape(size, NEXT_PINPOINTS, 336)
    layout = token_layout(cols * rows, 24, (cols, rows), size, unpad=True, newline=True)
    assert full == len(layout)
    n_newlines = int((layout.crop == -1).sum())

    mm = model.prepare_multimodal_inputs(ids, process_images([image], processor, model.config),
                                         image_sizes=[image.size], pruning=PruningConfig(visual_token_num=100))
    kept = layout.subset(mm.encoded.kept_indices[0])
    kept_tokens = int((kept.crop != -1).sum())
    rows_with_tokens = len(set(kept.row[(kept.crop > 0)].tolist()))
    assert kept_tokens == 100
    assert mm.encoded.token_counts[0] == 100 + rows_with_tokens <= 100 + n_newlines

    paper = PruningConfig(visual_token_num=29, anyres_mode="paper")
    pixels = process_images([image], processor, model.config, paper.anyres_mode)
    assert pixels.shape[1] == 5  # fixed 2x2 grid + base view, whatever the aspect ratio
    with model.pruning_config(paper):
        mm = model.prepare_multimodal_inputs(ids, pixels, image_sizes=[image.size])
    assert mm.encoded.token_counts == [5 * 29]
    # A ratio resolves per view in 'paper' mode (576 patches) and per image over its candidates otherwise.
    mm = model.prepare_multimodal_inputs(ids, pixels, image_sizes=[image.size], pruning=paper.replace(ratio=0.95))
    assert mm.encoded.token_counts == [5 * round(576 * 0.05)] and mm.encoded.budgets == [round(576 * 0.05)]
    candidates = int((layout.crop != -1).sum())
    mm = model.prepare_multimodal_inputs(ids, process_images([image], processor, model.config),
                                         image_sizes=[image.size], pruning=PruningConfig(ratio=0.9))
    assert mm.encoded.budgets == [round(candidates * 0.1)]
    assert int((layout.subset(mm.encoded.kept_indices[0]).crop != -1).sum()) == round(candidates * 0.1)


def test_budget_above_total_is_the_unpruned_model(next_model):
    tokenizer, model, processor, _ = next_model
    image = _image((400, 300))
    ids = _prompt(tokenizer)
    pixels = process_images([image], processor, model.config)
    ref = model(input_ids=ids, images=pixels, image_sizes=[image.size], pruning=PruningConfig()).logits
    pruned = model(input_ids=ids, images=pixels, image_sizes=[image.size],
                   pruning=PruningConfig(visual_token_num=10_000)).logits
    torch.testing.assert_close(pruned, ref, atol=0, rtol=0)


@pytest.mark.parametrize("mode,k", [("faithful", None), ("faithful", 200), ("paper", 29)])
def test_batch_equals_one_by_one(next_model, mode, k):
    tokenizer, model, processor, _ = next_model
    pruning = PruningConfig(visual_token_num=k, anyres_mode=mode)
    sizes = [(400, 300), (250, 900), (336, 336)]
    images = [_image(s) for s in sizes]
    rows = [_prompt(tokenizer, q)[0].tolist() for q in ("What?", "Describe this picture please.", "Where?")]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    pixels = [process_images([im], processor, model.config, mode)[0] for im in images]  # different view counts
    with model.pruning_config(pruning):
        batched = model.generate(ids, images=pixels, image_sizes=sizes, attention_mask=mask, max_new_tokens=6,
                                 do_sample=False)
        for b in range(3):
            single = model.generate(torch.tensor([rows[b]]), images=pixels[b:b + 1], image_sizes=sizes[b:b + 1],
                                    max_new_tokens=6, do_sample=False)
            assert batched[b].tolist() == single[0].tolist()


def test_anyres_errors(next_model):
    tokenizer, model, processor, _ = next_model
    image = _image((400, 300))
    pixels = process_images([image], processor, model.config)
    with pytest.raises(ValueError, match="image_sizes"):
        model.prepare_multimodal_inputs(_prompt(tokenizer), pixels)
    with pytest.raises(ValueError, match="anyres_mode"):
        model.set_pruning(None, anyres_mode="nope")
    with pytest.raises(ValueError, match="expected 5 anyres views"):  # 'paper' needs its own preprocessing
        model.prepare_multimodal_inputs(_prompt(tokenizer), process_images([_image((900, 300))], processor,
                                        model.config), image_sizes=[(900, 300)],
                                        pruning=PruningConfig(visual_token_num=29, anyres_mode="paper"))


def test_llava_hf_next_layout_loads_and_agrees(next_model, next_path, tmp_path):
    import json
    import shutil
    from pathlib import Path

    from llava.model.tiny import CLIP_PREPROCESSOR

    tokenizer, model, processor, _ = next_model
    dest = tmp_path / "llava-v1.6-tiny-hf"
    to_hf_model(model).save_pretrained(dest)
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(next_path) / name, dest / name)
    (dest / "preprocessor_config.json").write_text(json.dumps(CLIP_PREPROCESSOR))
    raw = json.loads((dest / "config.json").read_text())
    assert raw["model_type"] == "llava_next" and "image_grid_pinpoints" in raw

    hf_tok, loaded, hf_proc, _ = load_pretrained_model(str(dest), device="cpu")
    assert loaded.config.image_aspect_ratio == "anyres" and loaded.config.mm_patch_merge_type == "spatial_unpad"
    torch.testing.assert_close(loaded.image_newline, model.image_newline)
    image = _image((300, 500))
    ids = _prompt(tokenizer)
    pixels = process_images([image], processor, model.config)
    assert torch.equal(process_images([image], hf_proc, loaded.config), pixels)
    for k in (None, 300):
        ours = model(input_ids=ids, images=pixels, image_sizes=[image.size], visual_token_num=k).logits
        theirs = loaded(input_ids=ids, images=pixels, image_sizes=[image.size], visual_token_num=k).logits
        torch.testing.assert_close(theirs[..., : ours.shape[-1]], ours, atol=1e-6, rtol=1e-6)


def test_paper_mode_visionzip_keeps_every_views_own_merged_tokens(next_model, sample_images):
    """'paper' mode runs VisionZip per view, as its official LLaVA-NeXT path does: each view's [CLS],
    dominant and contextual (merged) tokens, K per view; the views' [CLS] tokens lead the image."""
    from llava.pruning import get_method

    _, model, processor, _ = next_model
    image = sample_images[0]
    views = process_images([image], processor, model.config, "paper").flatten(0, 1)  # [5, 3, S, S]
    encoded = model.encode_anyres_images(views, [image.size], pruning=PruningConfig("visionzip", 64,
                                                                                     anyres_mode="paper"))
    method = get_method("visionzip")
    selection = method.select(model.get_vision_tower()(views, needs=method.needs), 64)
    expected = model.mm_projector(selection.tokens)  # [5, 64, H] per view
    got = encoded.features[0]
    assert got.shape[0] == 5 * 64
    torch.testing.assert_close(got[:5], expected[:, 0], rtol=1e-5, atol=1e-5)  # each view's [CLS] first
    distance = torch.cdist(got.double(), expected.flatten(0, 1).double(), compute_mode="donot_use_mm_for_euclid_dist")
    assert distance.min(1).values.max() < 1e-4 and len(set(distance.argmin(1).tolist())) == 5 * 64
