"""The transformers-native NeXT pair (FasterVLMLlavaNext, FasterVLMLlavaNextProcessor) against our own driver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer, LlavaNextProcessor
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import build_prompt
from llava.integrations.transformers_next import FasterVLMLlavaNext, FasterVLMLlavaNextProcessor
from llava.mm_utils import tokenizer_image_token
from llava.model.hf_layout import to_hf_model
from llava.model.tiny import CLIP_PREPROCESSOR
from llava.pruning import get_method, list_methods

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "assets" / "samples"
QUESTIONS = [("shapes.png", "What is in the picture?"), ("stripes.png", "Are the stripes vertical?"),
             ("scene.png", "How many objects are there?")]
SIZES = [(400, 300), (300, 500), (1000, 320), (336, 336), (250, 900)]


@pytest.fixture(scope="module")
def next_hf(next_model, next_path, tmp_path_factory) -> str:
    """The tiny LLaVA-1.6 in the llava-hf layout, with a stock LlavaNextProcessor (PIL image processor)."""
    dest = tmp_path_factory.mktemp("next_hf") / "llava-v1.6-tiny-hf"
    model = next_model[1]
    to_hf_model(model).save_pretrained(dest)
    tokenizer = AutoTokenizer.from_pretrained(next_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    pins = [[h, w] for w, h in model.config.image_grid_pinpoints]  # llava-hf: (height, width)
    image_processor = LlavaNextImageProcessorPil(
        **{k: v for k, v in CLIP_PREPROCESSOR.items() if k != "image_processor_type"}, image_grid_pinpoints=pins)
    LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                       vision_feature_select_strategy="default", num_additional_image_tokens=1).save_pretrained(dest)
    image_processor.save_pretrained(dest)  # preprocessor_config.json, as the published llava-hf folders hold it
    assert tokenizer.convert_tokens_to_ids("<image>") == json.loads((dest / "config.json").read_text())["image_token_index"]
    return str(dest)


def _driver(next_hf: str, tmp_path: Path, k: int | None, mode: str) -> list[str]:
    """The questions through `python -m llava.eval.model_vqa_loader` on the same llava-hf folder, greedy."""
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": image, "text": q}) + "\n"
                                 for i, (image, q) in enumerate(QUESTIONS)))
    answers = tmp_path / "answers.jsonl"
    from llava.eval.model_vqa_loader import main

    main(["--model-path", next_hf, "--question-file", str(questions), "--image-folder", str(SAMPLES),
          "--answers-file", str(answers), "--temperature", "0", "--max_new_tokens", "6", "--device", "cpu",
          "--conv-mode", "vicuna_v1", "--anyres-mode", mode, *(["--visual-token-num", str(k)] if k else [])])
    records = {r["question_id"]: r for r in map(json.loads, answers.read_text().splitlines())}
    return [records[i]["text"] for i in range(len(QUESTIONS))]


@pytest.mark.parametrize("k, mode", [(None, "faithful"), (58, "paper")])
def test_answers_equal_our_driver(next_hf, tmp_path, k, mode):
    expected = _driver(next_hf, tmp_path, k, mode)
    model = FasterVLMLlavaNext.from_pretrained(next_hf, dtype=torch.float32, visual_token_num=k)
    processor = FasterVLMLlavaNextProcessor.from_pretrained(next_hf, visual_token_num=k)
    assert (model.pruning.anyres_mode, processor._pruning.anyres_mode) == (mode, mode)  # 'paper' once a K is set
    tokenizer = AutoTokenizer.from_pretrained(next_hf)
    got = []
    for image, question in QUESTIONS:
        picture = Image.open(SAMPLES / image).convert("RGB")
        # The driver's prompt ids: LLaVA tokenizes the text around <image> piece by piece (a prefix space
        # follows the image, as in the original code); the llava-hf processor tokenizes it whole.
        ids = tokenizer_image_token(build_prompt(question, "vicuna_v1", with_image=True), tokenizer,
                                    IMAGE_TOKEN_INDEX, return_tensors="pt")
        at = int((ids == IMAGE_TOKEN_INDEX).nonzero()[0])
        n = processor.token_count(picture.size)
        ids = torch.cat([ids[:at], torch.full((n,), processor.image_token_id), ids[at + 1:]])[None]
        batch = processor(images=picture, text="<image>", return_tensors="pt")
        out = model.generate(input_ids=ids, pixel_values=batch["pixel_values"], image_sizes=batch["image_sizes"],
                             max_new_tokens=6, do_sample=False)[0, ids.shape[1]:]
        got.append(tokenizer.decode(out, skip_special_tokens=True).strip())
    assert got == expected


NATIVE = [name for name in list_methods() if get_method(name).stage == "pre_llm"
          and not get_method(name).question_dependent]


@pytest.mark.parametrize("k, method", [(None, "fastervlm"), (58, "fastervlm"), (700, "fastervlm")]
                         + [(40, m) for m in NATIVE if m != "fastervlm"])
def test_placeholder_count_equals_the_models_tokens(next_hf, sample_images, k, method):
    """For several image sizes: the processor's placeholders == the model's returned tokens == the count formula."""
    model = FasterVLMLlavaNext.from_pretrained(next_hf, dtype=torch.float32, visual_token_num=k, pruning_method=method)
    processor = FasterVLMLlavaNextProcessor.from_pretrained(next_hf, visual_token_num=k)
    sizes = SIZES if method == "fastervlm" else SIZES[:2]
    images = [sample_images[2].resize(size) for size in sizes]
    text = ["USER: <image>\nHi ASSISTANT:"] * len(sizes)
    batch = processor(images=images, text=text, return_tensors="pt", padding=True)
    placeholders = (batch["input_ids"] == processor.image_token_id).sum(-1).tolist()
    features = model.get_image_features(batch["pixel_values"], batch["image_sizes"]).pooler_output
    assert placeholders == [f.shape[0] for f in features]
    assert placeholders == processor._get_num_multimodal_tokens([(h, w) for w, h in sizes]).num_image_tokens
    if k is None:  # the stock count, from transformers' own processor
        stock = LlavaNextProcessor.from_pretrained(next_hf)
        stock_batch = stock(images=images, text=text, return_tensors="pt", padding=True)
        assert placeholders == (stock_batch["input_ids"] == stock.image_token_id).sum(-1).tolist()
    else:
        assert placeholders == [5 * min(k, 576)] * len(sizes)
    if k == 58:  # and a batch of images of different sizes runs through the stock forward
        with torch.no_grad():
            assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_unpruned_logits_equal_transformers(next_hf, sample_images):
    from transformers import LlavaNextForConditionalGeneration

    processor = FasterVLMLlavaNextProcessor.from_pretrained(next_hf)
    batch = processor(images=[sample_images[0].resize((400, 300)), sample_images[1].resize((250, 900))],
                      text=["USER: <image>\nWhat? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:"],
                      return_tensors="pt", padding=True)
    stock = LlavaNextForConditionalGeneration.from_pretrained(next_hf, dtype=torch.float32).eval()
    model = FasterVLMLlavaNext.from_pretrained(next_hf, dtype=torch.float32)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits[real], stock(**batch).logits[real], rtol=1e-5, atol=1e-5)


def test_budget_survives_save_and_load(next_hf, tmp_path):
    processor = FasterVLMLlavaNextProcessor.from_pretrained(next_hf, visual_token_num=58)
    processor.save_pretrained(tmp_path)
    again = FasterVLMLlavaNextProcessor.from_pretrained(tmp_path)
    assert (again.visual_token_num, again._pruning.anyres_mode, again.token_count((400, 300))) == (58, "paper", 290)
    assert LlavaNextProcessor.from_pretrained(tmp_path).image_processor.image_grid_pinpoints == \
        processor.image_processor.image_grid_pinpoints  # 'paper' pinpoints are a call argument, never saved
    ratio = FasterVLMLlavaNextProcessor.from_pretrained(next_hf, visual_token_ratio=0.25)
    assert ratio.token_count((400, 300)) == 5 * 144


def test_errors_name_the_fix(next_hf, sample_images):
    with pytest.raises(ValueError, match="anyres_mode='faithful' with a budget .* use anyres_mode='paper'"):
        FasterVLMLlavaNext.from_pretrained(next_hf, visual_token_num=58, anyres_mode="faithful")
    with pytest.raises(ValueError, match="anyres_mode='faithful' with a budget"):
        FasterVLMLlavaNextProcessor.from_pretrained(next_hf, visual_token_num=58, anyres_mode="faithful")
    model = FasterVLMLlavaNext.from_pretrained(next_hf, dtype=torch.float32, visual_token_num=58)
    stock = LlavaNextProcessor.from_pretrained(next_hf)  # the checkpoint's grids and counts, not 'paper'
    batch = stock(images=sample_images[0].resize((400, 300)), text="USER: <image>\nHi ASSISTANT:",
                  return_tensors="pt")
    with pytest.raises(ValueError, match=r"hold 3 views per image, but anyres_mode='paper' needs 5"):
        model(**batch)
    paper = FasterVLMLlavaNextProcessor.from_pretrained(next_hf, visual_token_num=29)
    with pytest.raises(ValueError, match=r"hold 145 image placeholders but FasterVLM keeps 290 .*visual_token_num=58"):
        model(**paper(images=sample_images[0], text="USER: <image>\nHi ASSISTANT:", return_tensors="pt"))
