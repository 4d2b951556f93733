"""PruningConfig: a frozen, hashable, validated value."""

from __future__ import annotations

import dataclasses

import pytest

from llava.pruning import PruningConfig, get_method, list_methods


def test_defaults_and_value_semantics():
    cfg = PruningConfig()
    assert (cfg.method, cfg.visual_token_num, cfg.ratio, cfg.method_args, cfg.anyres_mode) == (
        "fastervlm", None, None, (), "faithful")
    assert not cfg.prunes and cfg.budget(576) is None
    a = PruningConfig("visionzip", 64, method_args={"contextual_ratio": 0.1, "contextual": 4})
    b = PruningConfig("visionzip", 64, method_args="contextual=4,contextual_ratio=0.1")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.method_args == (("contextual", 4), ("contextual_ratio", 0.1))
    assert a.args == {"contextual": 4, "contextual_ratio": 0.1}
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.visual_token_num = 3  # type: ignore[misc]


def test_ratio_resolves_per_image_token_count():
    cfg = PruningConfig(ratio=0.75)
    assert cfg.prunes and cfg.visual_token_num is None
    assert [cfg.budget(n) for n in (576, 2880, 10, 1)] == [144, 720, 2, 1]  # round(N * (1 - r)), at least 1
    assert PruningConfig(ratio=0).budget(576) == 576
    assert PruningConfig(visual_token_num=58).budget(2880) == 58


def test_keep_ratio_is_the_kept_fraction_per_image():
    cfg = PruningConfig(keep_ratio=0.25)
    assert cfg.prunes and cfg.per_image and cfg.visual_token_num is None and cfg.ratio is None
    # round(f * N), at least 1; Python's round takes halves to even (0.25 * 10 = 2.5 -> 2)
    assert [cfg.budget(n) for n in (576, 2929, 10, 2, 1)] == [144, 732, 2, 1, 1]  # round(0.5) = 0 -> 1
    assert PruningConfig(keep_ratio=1).budget(576) == 576 and PruningConfig(keep_ratio=0.1).budget(576) == 58
    assert cfg.to_metadata() == {"visual_token_num": None, "pruning_method": "fastervlm", "pruning_args": {},
                                 "visual_token_ratio": 0.25}
    assert cfg.replace(visual_token_num=64) == PruningConfig(visual_token_num=64)
    assert cfg.replace(ratio=0.5) == PruningConfig(ratio=0.5)
    assert PruningConfig(visual_token_num=64).replace(keep_ratio=0.5) == PruningConfig(keep_ratio=0.5)
    assert PruningConfig(ratio=0.5).replace(visual_token_num=None, keep_ratio=0.5) == PruningConfig(keep_ratio=0.5)


def test_replace_revalidates_and_keeps_k_and_ratio_exclusive():
    cfg = PruningConfig("random", 29, method_args={"seed": 3})
    assert cfg.replace(visual_token_num=58) == PruningConfig("random", 58, method_args={"seed": 3})
    by_ratio = cfg.replace(ratio=0.5)
    assert by_ratio.visual_token_num is None and by_ratio.ratio == 0.5
    assert by_ratio.replace(visual_token_num=7).ratio is None
    assert cfg == PruningConfig("random", 29, method_args={"seed": 3})  # the original is unchanged
    with pytest.raises(ValueError, match="PruningConfig.method_args"):
        cfg.replace(method="fastervlm")  # seed is not a fastervlm argument


@pytest.mark.parametrize(
    "fields,match",
    [
        (dict(method="nope"), r"PruningConfig.method: unknown pruning method 'nope'"),
        (dict(method=3), r"PruningConfig.method must be"),
        (dict(visual_token_num=0), r"PruningConfig.visual_token_num must be >= 1"),
        (dict(visual_token_num=2.5), r"PruningConfig.visual_token_num must be a positive integer"),
        (dict(visual_token_num=True), r"PruningConfig.visual_token_num must be a positive integer"),
        (dict(visual_token_num=[576, 58]), r"PruningConfig.visual_token_num must be one integer"),
        (dict(ratio=1.0), r"PruningConfig.ratio must be a reduction ratio in \[0, 1\)"),
        (dict(ratio=-0.1), r"PruningConfig.ratio"),
        (dict(ratio="half"), r"PruningConfig.ratio"),
        (dict(ratio=0.5, visual_token_num=64), r"visual_token_num \(64\) or ratio \(0.5\), not both"),
        (dict(method_args={"zz": 1}), r"PruningConfig.method_args: method 'fastervlm' has no argument\(s\) \['zz'\]"),
        (dict(method="fastv", method_args={"layer": [2]}), r"PruningConfig.method_args\['layer'\] must be a scalar"),
        (dict(method_args=5), r"PruningConfig.method_args must be a mapping"),
        (dict(anyres_mode="both"), r"PruningConfig.anyres_mode must be one of"),
        (dict(keep_ratio=0), r"PruningConfig.keep_ratio must be a kept fraction in \(0, 1\]"),
        (dict(keep_ratio=1.5), r"PruningConfig.keep_ratio must be a kept fraction in \(0, 1\]"),
        (dict(keep_ratio=float("nan")), r"PruningConfig.keep_ratio must be a kept fraction"),
        (dict(keep_ratio=True), r"PruningConfig.keep_ratio must be a kept fraction"),
        (dict(keep_ratio="0.5"), r"PruningConfig.keep_ratio must be a kept fraction"),
        (dict(keep_ratio=0.5, visual_token_num=64), r"give keep_ratio \(0.5\) or visual_token_num \(64\), not both"),
        (dict(keep_ratio=0.5, ratio=0.5), r"give keep_ratio \(0.5\) or ratio \(0.5\), not both"),
    ],
)
def test_bad_fields_raise_one_line_errors_naming_the_field(fields, match):
    with pytest.raises(ValueError, match=match) as err:
        PruningConfig(**fields)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", list_methods())
def test_every_registered_method_takes_its_own_defaults(name):
    defaults = get_method(name).defaults
    cfg = PruningConfig(name, 16, method_args=defaults)
    assert cfg.args == defaults and hash(cfg) == hash(PruningConfig(name, 16, method_args=dict(defaults)))


def test_float_k_that_is_an_integer_is_accepted():
    assert PruningConfig(visual_token_num=64.0).visual_token_num == 64


def test_legacy_fields():
    legacy = {"visual_token_num": 58, "pruning_method": "random", "pruning_args": {"seed": 1}, "anyres_mode": "paper"}
    assert PruningConfig.from_legacy(legacy) == PruningConfig("random", 58, method_args={"seed": 1}, anyres_mode="paper")
    assert PruningConfig.from_legacy({"pruning_args": {}, "pruning_method": None}) == PruningConfig()


def test_metadata_is_plain_json():
    assert PruningConfig("random", 29, method_args={"seed": 1}).to_metadata() == {
        "visual_token_num": 29, "pruning_method": "random", "pruning_args": {"seed": 1}}
    assert PruningConfig(ratio=0.9).to_metadata() == {
        "visual_token_num": None, "pruning_method": "fastervlm", "pruning_args": {}, "pruning_ratio": 0.9}
