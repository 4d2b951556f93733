"""Checkpoint folders of the processor families with a part missing: a config.json without its vision or
text section used to be a KeyError traceback (OneVision) or minutes of building a default-sized ViT and
then a weight-size error (Qwen2.5-VL); a folder without processor files got LLaVA-1.5's advice ("pass
the vision tower's folder"). Each is now one line naming the folder and what to restore."""

from __future__ import annotations

import json

import pytest

from llava.model.builder import load_pretrained_model

SECTIONS = [("llava_onevision", {"text_config": {"model_type": "qwen2"}}, "vision_config"),
            ("llava_onevision", {"vision_config": {}}, "text_config"),
            ("qwen2_5_vl", {"text_config": {}}, "vision_config"),
            ("qwen2_5_vl", {"hidden_size": 64}, "vision_config"),
            ("qwen2_5_vl", {"vision_config": {}}, "text_config"),  # used to build a 7B-sized LLM (killed here)
            ("qwen3_vl", {"vision_config": {}}, "text_config"),
            ("qwen3_vl", {"text_config": {}}, "vision_config")]


@pytest.mark.parametrize("model_type, fields, missing", SECTIONS)
def test_a_config_without_a_section_is_refused_before_any_weight_loads(tmp_path, model_type, fields, missing):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type, **fields}))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/config\.json has no '{missing}' section; restore config\.json "
                                         r"from the original checkpoint$"):
        load_pretrained_model(str(tmp_path), device="cpu")


def test_a_folder_without_processor_files_says_which_files(tmp_path):
    from llava.model.family_qwen2_5_vl import save_tiny_qwen2_5_vl

    folder = save_tiny_qwen2_5_vl(tmp_path / "tiny")
    for name in ("processor_config.json", "preprocessor_config.json"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match=r"tiny: no processor_config\.json or preprocessor_config\.json \(not a "
                                                r"processor folder\); copy the processor files from the released "
                                                r"checkpoint$"):
        load_pretrained_model(str(folder), device="cpu")
