"""The vLLM plugin's settings (no vLLM needed): read from the HF-config overrides, then the environment."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from llava.integrations.vllm_plugin.settings import kept_tokens, pruning_settings


def test_overrides_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("FASTERVLM_VISUAL_TOKEN_NUM", "29")
    cfg = pruning_settings(SimpleNamespace(fastervlm_visual_token_num=58, fastervlm_pruning_method="visionzip"))
    assert (cfg.method, cfg.visual_token_num) == ("visionzip", 58)
    assert pruning_settings(SimpleNamespace()).visual_token_num == 29
    monkeypatch.delenv("FASTERVLM_VISUAL_TOKEN_NUM")
    assert pruning_settings(SimpleNamespace()).visual_token_num is None


def test_kept_tokens_never_exceed_the_image():
    cfg = pruning_settings(SimpleNamespace(fastervlm_visual_token_num=58))
    assert [kept_tokens(cfg, n) for n in (576, 40)] == [58, 40]
    assert kept_tokens(pruning_settings(SimpleNamespace()), 576) == 576


@pytest.mark.parametrize("overrides, match", [
    ({"fastervlm_visual_token_num": "many"}, "bad pruning settings"),
    ({"fastervlm_visual_token_num": 0}, "bad pruning settings"),
    ({"fastervlm_pruning_method": "fastv", "fastervlm_visual_token_num": 58}, "prunes inside the LLM"),
    ({"fastervlm_pruning_method": "cdpruner", "fastervlm_visual_token_num": 58}, "reads the question text"),
    ({"fastervlm_pruning_method": "nope"}, "unknown pruning method 'nope'"),
])
def test_bad_settings_name_the_override(overrides, match):
    with pytest.raises(ValueError, match=match):
        pruning_settings(SimpleNamespace(**overrides))


def test_a_request_overrides_the_servers_k_and_method():
    from llava.integrations.vllm_plugin.settings import method_index, method_of, request_pruning

    server = pruning_settings(SimpleNamespace(fastervlm_visual_token_num=58, fastervlm_pruning_method="vispruner",
                                              fastervlm_pruning_args="important_ratio=0.5"))
    assert request_pruning(server, {}) is server
    assert request_pruning(server, {"fastervlm_visual_token_num": 29}).visual_token_num == 29
    assert request_pruning(server, {"fastervlm_visual_token_num": 29}).args == {"important_ratio": 0.5}
    assert request_pruning(server, {"fastervlm_visual_token_num": None}).visual_token_num is None
    assert request_pruning(server, {"fastervlm_visual_token_num": "none"}).visual_token_num is None
    other = request_pruning(server, {"fastervlm_pruning_method": "visionzip"})
    assert (other.method, other.visual_token_num, other.args) == ("visionzip", 58, {})  # its own defaults
    assert method_of(method_index("visionzip")) == "visionzip"


@pytest.mark.parametrize("kwargs, match", [
    ({"fastervlm_visual_token_num": 0}, "bad mm_processor_kwargs"),
    ({"fastervlm_visual_token_num": "many"}, "bad mm_processor_kwargs"),
    ({"fastervlm_pruning_method": "nope"}, "unknown pruning method 'nope'"),
    ({"fastervlm_pruning_method": "fastv"}, "mm_processor_kwargs fastervlm_pruning_method 'fastv' prunes inside"),
    ({"fastervlm_pruning_method": "cdpruner"}, "reads the question text"),
])
def test_bad_request_kwargs_name_the_key(kwargs, match):
    from llava.integrations.vllm_plugin.settings import request_pruning

    with pytest.raises(ValueError, match=match):
        request_pruning(pruning_settings(SimpleNamespace(fastervlm_visual_token_num=58)), kwargs)
