"""The image-only processors of llava.vision_compat, against the families' own PIL image processors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor, Qwen2_5_VLProcessor,
                          Qwen2VLImageProcessorPil, Qwen3VLProcessor, VideoLlavaProcessor)

from llava.model.family_onevision import CHAT_TEMPLATE, tiny_word_tokenizer
from llava.vision_compat import VideoNeedsTorchvisionError, image_only, load_processor, torchvision_error

QWEN_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>",
               "<|vision_start|>", "<|vision_end|>")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(200, 320), (390, 150)]]


@pytest.fixture(scope="module")
def ov_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ov_processor")
    image_processor = LlavaOnevisionImageProcessorPil(image_mean=[0.25, 0.5, 0.75])  # not the default: read back
    processor = image_only(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tiny_word_tokenizer(), num_image_tokens=729,
        vision_feature_select_strategy="full", vision_aspect_ratio="anyres_max_9", chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(folder)
    return folder


def test_torchvision_is_not_usable_here():
    # The suite's own environment: this decides which form load_processor() builds.
    assert torchvision_error() is not None


def test_the_saved_folder_is_the_family_own_layout(ov_folder):
    raw = json.loads((ov_folder / "processor_config.json").read_text())
    assert raw["processor_class"] == "LlavaOnevisionProcessor"
    assert (raw["num_image_tokens"], raw["vision_feature_select_strategy"], raw["vision_aspect_ratio"]) == \
        (729, "full", "anyres_max_9")
    assert raw["image_processor"]["image_mean"] == [0.25, 0.5, 0.75]
    assert "video_processor" not in raw


def test_onevision_pixels_are_the_pil_processors_and_tokens_expand_per_image(ov_folder, images):
    processor = load_processor(ov_folder)
    assert type(processor).__name__ == "LlavaOnevisionProcessorWithoutVideo"
    assert isinstance(processor, LlavaOnevisionProcessor)
    assert isinstance(processor.image_processor, LlavaOnevisionImageProcessorPil)
    assert (processor.num_image_tokens, processor.chat_template) == (729, CHAT_TEMPLATE)
    own = LlavaOnevisionImageProcessorPil.from_pretrained(str(ov_folder))
    assert list(own.image_mean) == [0.25, 0.5, 0.75]
    out = processor(images=images, text=["<image> what", "is <image>"], return_tensors="pt", padding=True)
    expected = own(images, return_tensors="pt")
    torch.testing.assert_close(out["pixel_values"], expected["pixel_values"], atol=0, rtol=0)
    assert out["image_sizes"].tolist() == [[200, 320], [390, 150]]
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    counts = (out["input_ids"] == image_id).sum(dim=1).tolist()
    # the family's own count for each (height, width), which the model's layout must match
    assert counts == [processor._get_number_of_features(h, w, 384, 384) for h, w in [(200, 320), (390, 150)]]


def test_a_video_is_refused_in_one_line_naming_what_to_install(ov_folder):
    processor = load_processor(ov_folder, torchvision=False)
    with pytest.raises(VideoNeedsTorchvisionError) as err:
        processor(videos=[np.zeros((4, 64, 64, 3), dtype=np.uint8)], text=["<video> what"])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("LlavaOnevisionProcessor: videos need torchvision")
    assert "pip install torchvision" in message


@pytest.mark.parametrize("parent", [Qwen2_5_VLProcessor, Qwen3VLProcessor])
def test_qwen_processors_expand_their_pad_token_by_the_merged_grid(parent, images, tmp_path):
    tokenizer = tiny_word_tokenizer(QWEN_TOKENS)
    patch = 16 if parent is Qwen3VLProcessor else 14
    image_processor = Qwen2VLImageProcessorPil(patch_size=patch, min_pixels=64 * 64, max_pixels=320 * 320)
    image_only(parent)(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE) \
        .save_pretrained(tmp_path)
    processor = load_processor(tmp_path)
    assert isinstance(processor, parent) and isinstance(processor.image_processor, Qwen2VLImageProcessorPil)
    out = processor(images=images, text=["<|image_pad|> a", "b <|image_pad|>"], return_tensors="pt", padding=True)
    own = Qwen2VLImageProcessorPil.from_pretrained(str(tmp_path))(images, return_tensors="pt")
    torch.testing.assert_close(out["pixel_values"], own["pixel_values"], atol=0, rtol=0)
    assert out["image_grid_thw"].tolist() == own["image_grid_thw"].tolist()
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (out["input_ids"] == pad).sum(dim=1).tolist() == (own["image_grid_thw"].prod(dim=1) // 4).tolist()


def test_processors_without_the_three_parts_are_refused_by_name():
    with pytest.raises(ValueError, match=r"VideoLlavaProcessor: expected parts \(image_processor, tokenizer, "
                                         r"video_processor\)"):
        image_only(VideoLlavaProcessor)


def test_a_folder_of_another_processor_is_refused(tmp_path):
    (tmp_path / "processor_config.json").write_text(json.dumps({"processor_class": "LlavaProcessor"}))
    with pytest.raises(ValueError, match="processor_class 'LlavaProcessor' has no image-only form"):
        load_processor(tmp_path)


def test_a_folder_without_processor_class_takes_its_models(tmp_path):
    """Image processor and tokenizer saved on their own: the class comes from config.json's model_type,
    the chat template from chat_template.json."""
    tokenizer = tiny_word_tokenizer(QWEN_TOKENS)
    tokenizer.save_pretrained(tmp_path)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=280 * 280).save_pretrained(tmp_path)
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2_5_vl"}))
    processor = load_processor(tmp_path, torchvision=False)
    assert isinstance(processor, Qwen2_5_VLProcessor) and processor.chat_template == CHAT_TEMPLATE
    assert processor.image_processor.size == {"shortest_edge": 56 * 56, "longest_edge": 280 * 280}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="name no processor_class and its config.json model_type is none of "
                                         "llava_onevision, qwen2_vl, qwen2_5_vl, qwen3_vl"):
        load_processor(tmp_path)
