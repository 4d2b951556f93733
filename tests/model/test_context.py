"""A prompt longer than the model's context is refused (naming the question in the runner), and cut only on request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llava.constants import IMAGE_TOKEN_INDEX
from llava.eval.runner import GenerationArgs, VQAItem, build_prompt, run_vqa
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.context import ContextOverflowError, ContextOverflowWarning

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "samples"
LONG = "Describe every colour you see, one by one. " * 180  # with <image> at K=58: 2,042 + 58 > 2,048


def _ids(tokenizer, question):
    prompt = build_prompt(question, "vicuna_v1", True)
    return tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None]


def test_generate_refuses_a_prompt_longer_than_the_context(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids = _ids(tokenizer, LONG)
    pixels = process_images(sample_images[:1], processor, model.config)
    length = ids.shape[1] - 1 + 58
    assert model.config.tokenizer_model_max_length == 2048 < length
    with pytest.raises(ContextOverflowError) as err:
        model.generate(ids, images=pixels, visual_token_num=58, max_new_tokens=1)
    assert str(err.value) == (f"prompt row 0: {length} tokens (text and visual) exceed the model's context of 2048; "
                              f"shorten the prompt or lower K, or pass truncate_prompts=True (--truncate-prompts)")
    assert (err.value.row, err.value.length, err.value.limit) == (0, length, 2048)
    with pytest.warns(ContextOverflowWarning, match=f"^prompt row 0: truncated from {length} to the model's context "
                                                    f"of 2048 tokens$"):
        out = model.generate(ids, images=pixels, visual_token_num=58, max_new_tokens=1, truncate_prompts=True,
                             do_sample=False)
    assert out.shape == (1, 1)


def test_runner_names_the_question(tiny, tmp_path, capsys):
    tokenizer, model, processor, _ = tiny
    items = [VQAItem("q-short", "What is it?", ["shapes.png"]), VQAItem("q-long", LONG, ["stripes.png"])]
    gen = GenerationArgs(temperature=0, max_new_tokens=1)
    answers = tmp_path / "answers.jsonl"
    with pytest.raises(ValueError) as err:
        run_vqa(model, tokenizer, processor, items, str(answers), "vicuna_v1", gen, "tiny", image_folder=str(SAMPLES),
                batch_size=2, metadata={"visual_token_num": None})
    length = _ids(tokenizer, LONG).shape[1] - 1 + 576
    assert str(err.value) == (f"question q-long: the prompt holds {length} tokens (text and visual), more than the "
                              f"model's context of 2048; shorten it or lower K, or pass --truncate-prompts to cut it "
                              f"to 2048")
    assert answers.read_text() == ""  # the batch holding it wrote nothing
    written = run_vqa(model, tokenizer, processor, items, str(answers), "vicuna_v1", gen, "tiny",
                      image_folder=str(SAMPLES), batch_size=2, truncate_prompts=True)
    assert written == 2
    assert [json.loads(line)["question_id"] for line in answers.read_text().splitlines()] == ["q-short", "q-long"]
    assert (f"warning: question q-long: prompt truncated from {length} to 2048 tokens (--truncate-prompts)"
            in capsys.readouterr().err)
