"""The transformers-native pair (FasterVLMLlava, FasterVLMLlavaProcessor) against transformers and our own model."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from transformers import AutoImageProcessor, AutoTokenizer, LlavaForConditionalGeneration

from llava.constants import IMAGE_TOKEN_INDEX
from llava.integrations.transformers_native import FasterVLMLlava, FasterVLMLlavaProcessor
from llava.mm_utils import tokenizer_image_token
from llava.model.builder import load_pretrained_model
from llava.model.tiny import HF_DIR
from llava.pruning import PruningConfig, get_method, list_methods

PROMPTS = ["USER: <image>\nWhat is in the picture? ASSISTANT:", "USER: <image>\nDescribe it. ASSISTANT:"]


@pytest.fixture(scope="module")
def hf_path(tiny_dir) -> str:
    return str(tiny_dir / HF_DIR)


@pytest.fixture(scope="module")
def processor_dir(hf_path, tmp_path_factory) -> str:
    """A FasterVLMLlavaProcessor saved with transformers' own save_pretrained (tokenizer with `<image>`)."""
    tokenizer = AutoTokenizer.from_pretrained(hf_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = FasterVLMLlavaProcessor(image_processor=AutoImageProcessor.from_pretrained(hf_path),
                                        tokenizer=tokenizer, patch_size=14, vision_feature_select_strategy="default",
                                        num_additional_image_tokens=1)  # as llava-hf/llava-1.5-7b-hf ships it
    out = tmp_path_factory.mktemp("processor")
    processor.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def ours(hf_path):
    """Our own model (LlavaForPruning) loaded from the same llava-hf folder."""
    return load_pretrained_model(hf_path, device="cpu", torch_dtype="float32")[1]


@pytest.fixture(scope="module")
def stock(hf_path):
    return LlavaForConditionalGeneration.from_pretrained(hf_path, dtype=torch.float32).eval()


def _inputs(processor_dir, sample_images, k):
    processor = FasterVLMLlavaProcessor.from_pretrained(processor_dir, visual_token_num=k)
    processor.tokenizer.padding_side = "left"
    return processor, processor(images=sample_images[:2], text=PROMPTS, return_tensors="pt", padding=True)


def test_loads_every_weight_like_the_stock_class(hf_path, stock, tmp_path):
    model = FasterVLMLlava.from_pretrained(hf_path, dtype=torch.float32)
    expected = stock.state_dict()
    got = model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[key], expected[key]) for key in expected)
    model.save_pretrained(tmp_path / "resaved")  # and what it saves, the stock class loads
    again = LlavaForConditionalGeneration.from_pretrained(tmp_path / "resaved", dtype=torch.float32).state_dict()
    assert all(torch.equal(again[key], expected[key]) for key in expected)


@pytest.mark.parametrize("k, expected", [(58, 58), (29, 29), (None, 576), (1000, 576)])
def test_processor_writes_one_placeholder_per_kept_token(processor_dir, sample_images, k, expected):
    processor, batch = _inputs(processor_dir, sample_images, k)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert (batch["input_ids"] == image_id).sum(-1).tolist() == [expected, expected]
    sizes = processor._get_num_multimodal_tokens(image_sizes=[(300, 400), (336, 336)])
    assert sizes.num_image_tokens == [expected, expected]


def test_processor_budget_survives_save_and_load(processor_dir, tmp_path):
    processor = FasterVLMLlavaProcessor.from_pretrained(processor_dir, visual_token_num=58)
    processor.save_pretrained(tmp_path)
    again = FasterVLMLlavaProcessor.from_pretrained(tmp_path)
    assert (again.visual_token_num, again.patch_size, again.kept(576)) == (58, 14, 58)
    ratio = FasterVLMLlavaProcessor.from_pretrained(processor_dir, visual_token_ratio=0.25)
    assert ratio.kept(576) == 144


def test_unpruned_logits_equal_transformers(hf_path, stock, processor_dir, sample_images):
    _, batch = _inputs(processor_dir, sample_images, None)
    model = FasterVLMLlava.from_pretrained(hf_path, dtype=torch.float32)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        got = model(**batch).logits[real]
        expected = stock(**batch).logits[real]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def _our_ids(ours_tokenizer, prompt, k, image_id):
    ids = tokenizer_image_token(prompt, ours_tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")
    at = int((ids == IMAGE_TOKEN_INDEX).nonzero()[0])
    return ids, torch.cat([ids[:at], torch.full((k,), image_id), ids[at + 1:]])


# every method the native pair can run: pre-LLM and blind to the question (from the registry)
NATIVE = [name for name in list_methods() if get_method(name).stage == "pre_llm"
          and not get_method(name).question_dependent]


@pytest.mark.parametrize("method", NATIVE)
@pytest.mark.parametrize("k", [58, 29])
def test_answers_equal_our_model(hf_path, ours, processor_dir, sample_images, method, k):
    """Same prompt ids and pixels: the greedy answer of the native pair equals LlavaForPruning's."""
    processor, batch = _inputs(processor_dir, sample_images, k)
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    model = FasterVLMLlava.from_pretrained(hf_path, dtype=torch.float32, visual_token_num=k, pruning_method=method)
    cfg = PruningConfig(method=method, visual_token_num=k)
    tokenizer = AutoTokenizer.from_pretrained(hf_path)
    for row, prompt in enumerate(PROMPTS):
        ours_ids, native_ids = _our_ids(tokenizer, prompt, k, image_id)
        pixels = batch["pixel_values"][row:row + 1]
        expected = ours.generate(ours_ids[None], images=pixels, pruning=cfg, max_new_tokens=6, do_sample=False)
        got = model.generate(input_ids=native_ids[None], pixel_values=pixels, max_new_tokens=6, do_sample=False)
        assert got[0, native_ids.shape[0]:].tolist() == expected[0].tolist()


def test_batched_generate_equals_one_by_one(hf_path, processor_dir, sample_images):
    processor, batch = _inputs(processor_dir, sample_images, 58)
    model = FasterVLMLlava.from_pretrained(hf_path, dtype=torch.float32, visual_token_num=58)
    together = model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch["input_ids"].shape[1]:]
    for row, prompt in enumerate(PROMPTS):
        single = processor(images=sample_images[row], text=prompt, return_tensors="pt")
        alone = model.generate(**single, max_new_tokens=6, do_sample=False)[0, single["input_ids"].shape[1]:]
        assert together[row].tolist() == alone.tolist()


def test_only_kept_tokens_are_projected(hf_path, processor_dir, sample_images):
    _, batch = _inputs(processor_dir, sample_images, 29)
    model = FasterVLMLlava.from_pretrained(hf_path, dtype=torch.float32, visual_token_num=29)
    rows = []
    hook = model.model.multi_modal_projector.register_forward_hook(lambda m, a, o: rows.append(a[0].shape[-2]))
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        hook.remove()
    assert rows == [29]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attention_implementations_and_device_map(hf_path, processor_dir, sample_images, attn):
    _, batch = _inputs(processor_dir, sample_images, 58)
    reference = FasterVLMLlava.from_pretrained(hf_path, dtype=torch.float32, visual_token_num=58)
    model = FasterVLMLlava.from_pretrained(hf_path, dtype=torch.float32, visual_token_num=58,
                                           attn_implementation=attn, device_map="cpu")
    real = batch["attention_mask"].bool()  # padded positions' logits are undefined
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits[real], reference(**batch).logits[real], rtol=1e-4, atol=1e-4)


def test_placeholder_count_mismatch_is_a_clear_error(hf_path, processor_dir, sample_images):
    _, batch = _inputs(processor_dir, sample_images, 29)
    model = FasterVLMLlava.from_pretrained(hf_path, dtype=torch.float32, visual_token_num=58)
    with pytest.raises(ValueError, match=r"hold 58 image placeholders but FasterVLM keeps 116 visual tokens for 2 "
                                         r"image\(s\); .*visual_token_num=58"):
        model(**batch)


@pytest.mark.parametrize("kwargs, match", [
    ({"pruning_method": "fastv", "visual_token_num": 58}, "prunes inside the LLM"),
    ({"pruning_method": "cdpruner", "visual_token_num": 58}, "reads the question text"),
    ({"visual_token_num": 58, "visual_token_ratio": 0.1}, "not both"),
    ({"visual_token_ratio": 1.5}, r"visual_token_ratio must be in \(0, 1\]"),
    ({"pruning_method": "nope", "visual_token_num": 58}, "unknown pruning method 'nope'"),
])
def test_bad_pruning_arguments(hf_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FasterVLMLlava.from_pretrained(hf_path, **kwargs)


IMPORT_CASES = {  # transformers' modules and top-level classes, and what of ours is imported in between
    "llava": ("llava", ("LlavaForConditionalGeneration", "LlavaProcessor"),
              "import llava.integrations.transformers_native\nimport llava, llava.model.builder"),
    "llava_next": ("llava_next", ("LlavaNextForConditionalGeneration", "LlavaNextProcessor"),
                   "import llava.integrations.transformers_next"),
}


@pytest.mark.parametrize("case", sorted(IMPORT_CASES))
def test_importing_changes_nothing_in_transformers(case):
    """Every attribute of transformers' model and processor modules and classes is the same object before and
    after our import."""
    family, classes, ours = IMPORT_CASES[case]
    code = textwrap.dedent(f"""
        import transformers.models.{family}.modeling_{family} as m
        import transformers.models.{family}.processing_{family} as p
        import transformers
        def snap():
            out = {{}}
            for mod in (m, p):
                for name, value in vars(mod).items():
                    out[(mod.__name__, name)] = id(value)
                    if isinstance(value, type):
                        out.update({{(mod.__name__, name, k): id(v) for k, v in vars(value).items()}})
            out.update({{("transformers", n): id(getattr(transformers, n)) for n in
                        {classes + ("AutoModelForImageTextToText",)!r}}})
            return out
        before = snap()
    """) + ours + textwrap.dedent("""
        after = snap()
        changed = [k for k in before if after.get(k) != before[k]]
        print("CHANGED", changed)
        assert not changed
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=str(Path(__file__).resolve().parents[2]))
    assert result.returncode == 0, result.stdout + result.stderr
