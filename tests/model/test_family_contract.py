"""The pre-LLM methods' contract, parametrised over the registry's methods and the families that bring a processor.

Each family's tiny checkpoint (its registered `tiny` builder) is loaded through `load_pretrained_model`
and fed one image by its own processor and chat template. For every pre-LLM method, on every such
family: it runs, or it refuses in one line naming the method and the family. When it runs, each
image enters the LLM with at most K visual tokens, its kept indices are sorted, unique and in range,
and a budget of at least N_i keeps every token. K is N_i - 16, so a method runs in a few
iterations even on OneVision's 1 261 candidates (its own tests cover small budgets, and
tests/pruning/test_contract.py each method's determinism and exact counts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.model.builder import load_pretrained_model
from llava.model.families import get_family, list_families
from llava.pruning import PruningConfig, get_method, list_methods

PRE_LLM = [m for m in list_methods() if get_method(m).stage == "pre_llm"]
# Families whose checkpoints come with a processor (the llava-hf layouts with their own chat template).
PROCESSOR_FAMILIES = ("llava-onevision", "qwen2_5_vl", "qwen3_vl")
FAMILIES = [name for name in list_families() if name in PROCESSOR_FAMILIES]
MARGIN = 16  # K = N_i - MARGIN


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    cache: dict[str, tuple] = {}

    def load(name: str):
        if name not in cache:
            folder = get_family(name).tiny(tmp_path_factory.mktemp(name.replace("-", "_")))
            assert (Path(folder) / "processor_config.json").is_file()
            _, model, processor, _ = load_pretrained_model(str(folder), device="cpu")
            rng = np.random.default_rng(0)
            image = Image.fromarray(rng.integers(0, 255, (200, 280, 3), dtype=np.uint8))
            turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is here ?"}]}]
            text = processor.apply_chat_template(turn, add_generation_prompt=True)
            batch = processor(images=[image], text=[text], return_tensors="pt")
            cache[name] = (model, batch, int((batch["input_ids"] == processor.image_token_id).sum()))
        return cache[name]

    return load


def _run(model, batch, cfg: PruningConfig):
    grid = batch["image_sizes"] if "image_sizes" in batch else batch["image_grid_thw"]
    model.generate(inputs=batch["input_ids"], attention_mask=batch["attention_mask"], images=batch["pixel_values"],
                   image_sizes=grid, pruning=cfg, max_new_tokens=1, do_sample=False)
    return model.last_multimodal


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", PRE_LLM)
def test_each_pre_llm_method_keeps_its_contract_on_each_family_or_refuses_by_name(loaded, family, name):
    model, batch, n_full = loaded(family)  # N_i: the processor's placeholder run
    whole = _run(model, batch, PruningConfig(method=name, visual_token_num=n_full))
    assert whole.unpruned_counts == [n_full] and whole.token_counts == [n_full] and whole.kept_indices == [None]
    k = n_full - MARGIN
    try:
        pruned = _run(model, batch, PruningConfig(method=name, visual_token_num=k))
    except ValueError as err:
        message = str(err)
        assert message.startswith(f"pruning method {name!r} cannot run on {family}"), message
        assert "\n" not in message
        return
    assert pruned.token_counts[0] <= k and pruned.budgets == [k] and pruned.unpruned_counts == [n_full]
    values = pruned.kept_indices[0].tolist()
    assert values == sorted(set(values)) and 0 <= values[0] and values[-1] < n_full


def test_every_processor_family_is_registered():
    assert sorted(FAMILIES) == sorted(PROCESSOR_FAMILIES)
