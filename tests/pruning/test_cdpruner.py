"""CDPruner against an independent re-derivation of its official rule (Theia-4869/CDPruner,
`llava/model/llava_arch.py` `encode_images`): the kernel, the relevance, the greedy DPP MAP in plain
loops (and by log-det brute force), the CLIP text tower against transformers' own CLIPModel, the
question's path from the drivers to the selector, and the refusal of the shared-prefix path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig, CLIPVisionModel

from llava.constants import IMAGE_TOKEN_INDEX
from llava.pruning import VisionSignals, get_method
from llava.pruning.methods.cdpruner import greedy_dpp_map

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
SUFFIX = "\nAnswer the question using a single word or phrase."


# ---- the official rule, re-derived in plain Python loops -------------------------------------------
def reference_kernel(projected: list[list[float]], text_relevance: list[float], theta=None) -> list[list[float]]:
    """L_ij = r_i cos(x_i, x_j) r_j with r the official rescaled negative relevance."""
    n = len(projected)
    norms = [math.sqrt(sum(v * v for v in row)) for row in projected]
    unit = [[v / norms[i] for v in row] for i, row in enumerate(projected)]
    neg = [-t for t in text_relevance]
    lo, hi = min(neg), max(neg)
    rel = [(v - lo + 1e-6) / (hi - lo) for v in neg]
    if theta is not None:
        alpha = theta / (2 * (1 - theta))
        rel = [math.exp(alpha * v) for v in rel]
    return [[rel[i] * sum(a * b for a, b in zip(unit[i], unit[j])) * rel[j] for j in range(n)] for i in range(n)]


def reference_greedy(kernel: list[list[float]], k: int) -> list[int]:
    """The official fast greedy MAP loop (incremental Cholesky), element by element; sorted picks."""
    n = len(kernel)
    gains = [kernel[i][i] for i in range(n)]
    columns: list[list[float]] = []
    picks = []
    for _ in range(k):
        j = max(range(n), key=lambda i: (gains[i], -i))  # argmax, first index on ties
        picks.append(j)
        root = math.sqrt(gains[j])
        e = [(kernel[j][m] - sum(c[j] * c[m] for c in columns)) / root for m in range(n)]
        columns.append(e)
        gains = [g - v * v for g, v in zip(gains, e)]
        gains[j] = float("-inf")
    return sorted(picks)


def logdet_greedy(kernel: torch.Tensor, k: int) -> list[int]:
    """Greedy MAP by brute force: each step adds the item that maximises det(L_S) (float64)."""
    chosen: list[int] = []
    for _ in range(k):
        best, best_det = None, -math.inf
        for i in range(kernel.shape[0]):
            if i in chosen:
                continue
            idx = chosen + [i]
            det = float(torch.linalg.det(kernel[idx][:, idx].double()))
            if det > best_det:
                best, best_det = i, det
        chosen.append(best)
    return sorted(chosen)


def random_case(seed: int, n: int = 40, h: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, n, h, generator=gen), 0.3 * torch.tanh(torch.randn(1, n, generator=gen))


def select(projected: torch.Tensor, relevance: torch.Tensor, k: int, **args) -> list[int]:
    signals = VisionSignals(torch.zeros(*projected.shape[:2], 4), projected=projected, text_relevance=relevance)
    return get_method("cdpruner").select(signals, k, **args).indices[0].tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("theta", [None, 0.5])
def test_matches_the_plain_loop_official_rule(seed, k, theta):
    projected, relevance = random_case(seed)
    kernel = reference_kernel(projected[0].tolist(), relevance[0].tolist(), theta)
    assert select(projected, relevance, k, theta=theta) == reference_greedy(kernel, k)


@pytest.mark.parametrize("seed", [3, 4])
def test_fast_greedy_equals_logdet_greedy(seed):
    projected, relevance = random_case(seed, n=9, h=6)
    kernel = torch.tensor(reference_kernel(projected[0].tolist(), relevance[0].tolist()), dtype=torch.float64)
    for k in (1, 3, 5):
        expected = logdet_greedy(kernel, k)
        assert greedy_dpp_map(kernel, k).sort().values.tolist() == expected
        assert select(projected, relevance, k) == expected


def test_relevance_steers_the_choice():
    """Equal similarities everywhere but one relevant patch: the lowest cosine (negated: highest r) wins."""
    projected = torch.eye(6)[None]  # orthogonal tokens: S = I, so L = diag(r^2)
    relevance = torch.tensor([[0.1, 0.3, -0.2, 0.0, 0.2, -0.1]])
    assert select(projected, relevance, 2) == [2, 5]  # the two most negative cosines
    assert select(projected, relevance, 2, theta=0.0) == [0, 1]  # theta = 0: no relevance, ties to the lower index


def test_budget_covering_all_keeps_everything():
    projected, relevance = random_case(5, n=12)
    for k in (12, 13, 100):
        assert select(projected, relevance, k) == list(range(12))


def test_k_beyond_the_kernel_rank_still_gives_k_unique_tokens():
    projected, relevance = random_case(6, n=30, h=4)  # rank 4
    picks = select(projected, relevance, 20)
    assert len(set(picks)) == 20 and picks == sorted(picks)
    assert set(select(projected, relevance, 4)) <= set(picks)  # greedy: the first picks stay


def test_bad_theta_is_refused():
    projected, relevance = random_case(7)
    with pytest.raises(ValueError, match=r"theta=1.0 must be in \[0, 1\)"):
        select(projected, relevance, 3, theta=1.0)


# ---- the CLIP text tower ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    """A small full CLIPModel and its tokenizer, saved with the libraries' own save_pretrained."""
    from llava.model.tiny import tiny_clip_tokenizer

    torch.manual_seed(0)
    text = CLIPTextConfig(vocab_size=514, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=77, bos_token_id=512, eos_token_id=513,
                          pad_token_id=513, projection_dim=24)
    vision = CLIPVisionConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                              image_size=56, patch_size=14, projection_dim=24)
    folder = tmp_path_factory.mktemp("clip-full")
    CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=24)).save_pretrained(
        folder)
    tiny_clip_tokenizer().save_pretrained(folder)
    return folder


def _reference_text_embeds(clip: CLIPModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return clip.text_projection(clip.text_model(input_ids=ids, attention_mask=mask).pooler_output)


def test_text_tower_loads_from_a_saved_clip_and_matches_clipmodel(clip_folder):
    from llava.model.multimodal_encoder.clip_text import load_clip_text_tower

    tower = load_clip_text_tower(str(clip_folder))
    clip = CLIPModel.from_pretrained(str(clip_folder)).eval()
    assert tower.text_model.dtype == torch.float32 and tower.visual_projection.weight.shape == (24, 48)
    torch.testing.assert_close(tower.visual_projection.weight, clip.visual_projection.weight)
    text = "What is the colour of the ball?"
    inputs = tower.tokenizer(text, return_tensors="pt")
    ids = inputs["input_ids"]
    assert ids[0, 0] == 512 and ids[0, -1] == 513  # <|startoftext|> ... <|endoftext|>
    pad = 77 - ids.shape[1]
    padded_ids = torch.cat([ids, ids.new_zeros(1, pad)], dim=1)
    padded_mask = torch.cat([inputs["attention_mask"], ids.new_zeros(1, pad)], dim=1)
    with torch.no_grad():
        expected = _reference_text_embeds(clip, padded_ids, padded_mask)
        unpadded = _reference_text_embeds(clip, ids, inputs["attention_mask"])
    got = tower.embed_text(text)
    assert got.shape == (1, 24)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, unpadded, rtol=1e-4, atol=1e-5)  # the zero padding is masked out

    # The image side: the selected layer's patches -> post_layernorm -> visual projection; cosine, mean.
    images = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        hidden = clip.vision_model(pixel_values=images, output_hidden_states=True).hidden_states[-2][:, 1:]
        image = clip.visual_projection(clip.vision_model.post_layernorm(hidden))
        image = image / image.norm(dim=-1, keepdim=True)
        texts = [text, "dog " * 30]  # the second one spans two 77-token segments
        want = []
        for b, t in enumerate(texts):
            emb = tower.embed_text(t)
            emb = emb / emb.norm(dim=-1, keepdim=True)
            want.append((image[b] @ emb.t()).mean(-1))
    assert tower.embed_text(texts[1]).shape[0] == 2
    vision = CLIPVisionModel.from_pretrained(str(clip_folder)).eval()
    got = tower.relevance(vision.post_layernorm, hidden, texts)
    torch.testing.assert_close(got, torch.stack(want))


def test_long_text_is_cut_into_zero_padded_segments(clip_folder):
    from llava.model.multimodal_encoder.clip_text import load_clip_text_tower

    tower = load_clip_text_tower(str(clip_folder))
    clip = CLIPModel.from_pretrained(str(clip_folder)).eval()
    text = "dog " * 30
    inputs = tower.tokenizer(text, return_tensors="pt")
    ids, mask = inputs["input_ids"][0], inputs["attention_mask"][0]
    assert 77 < len(ids) <= 154
    pad = 154 - len(ids)
    ids = torch.cat([ids, ids.new_zeros(pad)]).view(2, 77)
    mask = torch.cat([mask, mask.new_zeros(pad)]).view(2, 77)
    with torch.no_grad():
        torch.testing.assert_close(tower.embed_text(text), _reference_text_embeds(clip, ids, mask))


def test_vision_only_folder_is_refused(tmp_path):
    from llava.model.checkpoint_checks import CheckpointError
    from llava.model.multimodal_encoder.clip_text import load_clip_text_tower

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip_vision_model"}))
    with pytest.raises(CheckpointError, match="needs the full CLIP checkpoint"):
        load_clip_text_tower(str(tmp_path))


# ---- the tiny model ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cd_model(tiny_path):
    """The tiny LLaVA-1.5 loaded with cdpruner at K = 32 (the text tower comes with it)."""
    from llava.model.builder import load_pretrained_model

    return load_pretrained_model(tiny_path, device="cpu", torch_dtype="float32", pruning_method="cdpruner",
                                 visual_token_num=32)


def _prompt(tokenizer, question: str) -> torch.Tensor:
    from llava.eval.runner import build_prompt
    from llava.mm_utils import tokenizer_image_token

    return tokenizer_image_token(build_prompt(question, "vicuna_v1", True), tokenizer, IMAGE_TOKEN_INDEX,
                                 return_tensors="pt")[None]


def test_text_tower_is_loaded_only_for_cdpruner(tiny, cd_model):
    assert tiny[1].text_tower is None
    tower = cd_model[1].text_tower
    assert tower is not None and tower.visual_projection.weight.shape == (64, 64)  # projection_dim = vision's
    assert tower.name == cd_model[1].get_vision_tower().vision_tower_name
    assert not any(name.startswith("text") for name, _ in cd_model[1].named_parameters())


def test_tiny_model_keeps_the_official_rules_tokens(cd_model, tiny_dir, sample_images):
    """Kept indices from generate() against the rule computed from transformers' own CLIPModel."""
    from llava.mm_utils import process_images
    from llava.model.tiny import CLIP_DIR

    tokenizer, model, processor, _ = cd_model
    question = "What colour is the square?"
    pixels = process_images(sample_images[:1], processor, model.config)
    model.generate(_prompt(tokenizer, question), images=pixels, texts=[question], max_new_tokens=1, do_sample=False)
    kept = model.last_multimodal.kept_indices[0].tolist()

    clip = CLIPModel.from_pretrained(str(tiny_dir / CLIP_DIR)).eval()
    tok = model.text_tower.tokenizer
    with torch.no_grad():
        hidden = clip.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        image = clip.visual_projection(clip.vision_model.post_layernorm(hidden))[0]  # [N, C]
        inputs = tok(question, return_tensors="pt")
        text = _reference_text_embeds(clip, inputs["input_ids"], inputs["attention_mask"])[0]
        cosine = (image / image.norm(dim=-1, keepdim=True)) @ (text / text.norm())
        projected = model.mm_projector(hidden)[0]
    # The same kernel as `reference_kernel`, in float64 tensor algebra (576 x 576: loops would be slow).
    x = projected.double() / projected.double().norm(dim=-1, keepdim=True)
    neg = -cosine.double()
    r = (neg - neg.min() + 1e-6) / (neg.max() - neg.min())
    kernel = (r[:, None] * (x @ x.t()) * r[None, :]).tolist()
    assert kept == reference_greedy(kernel, 32)
    assert model.last_multimodal.token_counts == [32]


def test_budget_covering_the_image_keeps_all(cd_model, sample_images):
    from llava.mm_utils import process_images

    tokenizer, model, processor, _ = cd_model
    pixels = process_images(sample_images[:1], processor, model.config)
    for k in (576, 1000):
        model.generate(_prompt(tokenizer, "Hi?"), images=pixels, texts=["Hi?"], visual_token_num=k,
                       max_new_tokens=1, do_sample=False)
        assert model.last_multimodal.token_counts == [576]


def test_missing_question_is_a_clear_error(cd_model, sample_images):
    from llava.mm_utils import process_images

    tokenizer, model, processor, _ = cd_model
    pixels = process_images(sample_images[:1], processor, model.config)
    with pytest.raises(ValueError, match="pass the question text"):
        model.generate(_prompt(tokenizer, "Hi?"), images=pixels, max_new_tokens=1)
    with pytest.raises(ValueError, match="2 question texts for 1 prompt rows"):
        model.generate(_prompt(tokenizer, "Hi?"), images=pixels, texts=["a", "b"], max_new_tokens=1)


def test_without_the_text_tower_the_error_says_how_to_load_it(tiny, sample_images):
    from llava.mm_utils import process_images
    from llava.pruning import PruningConfig

    tokenizer, model, processor, _ = tiny
    pixels = process_images(sample_images[:1], processor, model.config)
    with pytest.raises(ValueError, match="needs the CLIP text tower"):
        model.generate(_prompt(tokenizer, "Hi?"), images=pixels, texts=["Hi?"], max_new_tokens=1,
                       pruning=PruningConfig(visual_token_num=16, method="cdpruner"))


def test_batch_rows_get_their_own_questions(cd_model, sample_images):
    from llava.mm_utils import process_images

    tokenizer, model, processor, _ = cd_model
    questions = ["What colour is the square?", "Is there a circle on the left?"]
    pixels = process_images([sample_images[0], sample_images[0]], processor, model.config)
    singles = []
    for q in questions:
        model.generate(_prompt(tokenizer, q), images=pixels[:1], texts=[q], max_new_tokens=1, do_sample=False)
        singles.append(model.last_multimodal.kept_indices[0])
    assert not torch.equal(singles[0], singles[1])  # the question changes the kept set
    rows = [_prompt(tokenizer, q)[0] for q in questions]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([r.new_zeros(width - len(r)), r]) for r in rows])
    mask = torch.stack([torch.cat([r.new_zeros(width - len(r)), torch.ones_like(r)]) for r in rows])
    model.generate(ids, images=pixels, attention_mask=mask, texts=questions, max_new_tokens=1, do_sample=False)
    for got, want in zip(model.last_multimodal.kept_indices, singles):
        assert torch.equal(got, want)


# ---- drivers: the question reaches the selector, the shared prefix is refused --------------------------
def test_relevance_text_strips_llava_suffixes():
    from llava.eval.runner import relevance_text

    assert relevance_text("What is it?" + SUFFIX) == "What is it?"
    assert relevance_text("Q\nA. x\nB. y\nAnswer with the option's letter from the given choices directly.") == \
        "Q\nA. x\nB. y"
    assert relevance_text("问题\nA. x\n请直接回答选项字母。") == "问题\nA. x"
    assert relevance_text("no suffix") == "no suffix"


def test_shared_prefix_path_refuses_cdpruner(cd_model, tiny, sample_images):
    from llava.eval.runner import GenerationArgs, _shares_prefix
    from llava.mm_utils import process_images
    from llava.model.shared_prefix import PrefixStore, generate_shared

    tokenizer, model, processor, _ = cd_model
    assert not _shares_prefix(model, GenerationArgs(temperature=0))
    assert _shares_prefix(tiny[1], GenerationArgs(temperature=0))  # fastervlm still shares
    pixels = process_images(sample_images[:1], processor, model.config)
    ids = _prompt(tokenizer, "Hi?")
    with pytest.raises(ValueError, match="'cdpruner' chooses its tokens from the question text"):
        generate_shared(model, ids, torch.ones_like(ids), [("img", 32)], PrefixStore(), images=pixels,
                        texts=["Hi?"], max_new_tokens=1)


def test_runner_passes_the_stripped_question(cd_model, tmp_path):
    from PIL import Image

    from llava.eval.runner import GenerationArgs, VQAItem, run_vqa
    from llava.mm_utils import process_images

    tokenizer, model, processor, _ = cd_model
    question = "Is the square red?"
    items = [VQAItem(7, question + SUFFIX, ["shapes.png"])]
    answers = tmp_path / "answers.jsonl"
    run_vqa(model, tokenizer, processor, items, str(answers), "vicuna_v1", GenerationArgs(temperature=0, max_new_tokens=2),
            "tiny", image_folder=str(SAMPLES))
    from_runner = model.last_multimodal.kept_indices[0]
    record = json.loads(answers.read_text())
    assert record["metadata"]["shared_prefix"] is False and record["metadata"]["visual_tokens"] == 32

    pixels = process_images([Image.open(SAMPLES / "shapes.png").convert("RGB")], processor, model.config)
    ids = _prompt(tokenizer, question + SUFFIX)
    kept = {}
    for name, text in (("stripped", question), ("full", question + SUFFIX)):
        model.generate(ids, images=pixels, texts=[text], max_new_tokens=1, do_sample=False)
        kept[name] = model.last_multimodal.kept_indices[0]
    assert not torch.equal(kept["stripped"], kept["full"])  # the suffix would change the choice here
    assert torch.equal(from_runner, kept["stripped"])


def test_model_vqa_loader_runs_cdpruner(tiny_dir, tmp_path):
    from llava.eval import model_vqa_loader
    from llava.model.tiny import LLAVA_DIR

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": "shapes.png", "text": q + SUFFIX}) + "\n"
                                 for i, q in enumerate(["What shape?", "How many?"])))
    answers = tmp_path / "a.jsonl"
    model_vqa_loader.main(["--model-path", str(tiny_dir / LLAVA_DIR), "--question-file", str(questions),
                           "--image-folder", str(SAMPLES), "--answers-file", str(answers), "--conv-mode", "vicuna_v1",
                           "--temperature", "0", "--max_new_tokens", "2", "--visual-token-num", "16",
                           "--pruning-method", "cdpruner", "--device", "cpu"])
    records = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in records] == [0, 1]
    for r in records:
        assert r["metadata"]["pruning_method"] == "cdpruner" and r["metadata"]["visual_tokens"] == 16
        assert r["metadata"]["shared_prefix"] is False


# ---- LLaVA-NeXT ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["faithful", "paper"])
def test_llava_next_runs(next_path, sample_images, mode):
    from llava.mm_utils import process_images
    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(next_path, device="cpu", pruning_method="cdpruner",
                                                           visual_token_num=24, anyres_mode=mode)
    image = sample_images[2]
    pixels = process_images([image], processor, model.config, mode)
    model.generate(_prompt(tokenizer, "What is here?"), images=pixels, image_sizes=[image.size],
                   texts=["What is here?"], max_new_tokens=1, do_sample=False)
    tokens = model.last_multimodal.features[0]
    if mode == "paper":
        n_views = pixels.shape[1] if pixels.ndim == 5 else len(pixels[0])
        assert model.last_multimodal.token_counts == [24 * n_views]
    else:
        newline = (tokens == model.image_newline.to(tokens.dtype)).all(-1)
        assert int((~newline).sum()) == 24


def test_hf_layout_needs_the_clip_folder(tiny_dir):
    """A llava-hf checkpoint stores its tower but names no CLIP folder: the text tower comes from --vision-tower."""
    from llava.model.builder import load_pretrained_model
    from llava.model.tiny import CLIP_DIR, HF_DIR

    with pytest.raises(ValueError, match=r"'cdpruner' needs CLIP's text tower, but .* names no vision tower folder"):
        load_pretrained_model(str(tiny_dir / HF_DIR), device="cpu", pruning_method="cdpruner", visual_token_num=16)
    _, model, _, _ = load_pretrained_model(str(tiny_dir / HF_DIR), device="cpu", pruning_method="cdpruner",
                                           visual_token_num=16, vision_tower_path=str(tiny_dir / CLIP_DIR))
    assert model.text_tower.name == str(tiny_dir / CLIP_DIR)
