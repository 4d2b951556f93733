"""The signal-dispersion analysis on tiny LLaVA-1.5 and OneVision checkpoints: numbers equal the stats of
the towers' own signals, [CLS] only where it exists, agreement with [CLS] only there."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llava.analysis import signal_dispersion as sd
from llava.analysis.stats import concentration_summary, top_overlap
from llava.mm_utils import load_image, process_images


@pytest.fixture(scope="module")
def ov_path(tmp_path_factory):
    from llava.model.family_onevision import save_tiny_onevision

    return str(save_tiny_onevision(tmp_path_factory.mktemp("ov") / "tiny"))


@pytest.fixture(scope="module")
def run(tiny_path, ov_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("sd")
    image = str(sd.common.REPO / "assets" / "samples" / "shapes.png")
    stats = sd.main(["--model-path", tiny_path, "--model-path", ov_path, "--images", image,
                     "--output-dir", str(out)])
    return stats, out, image


def test_every_signal_is_summarised_and_cls_only_where_the_tower_has_it(run):
    stats, out, _ = run
    by_source = {}
    for row in stats["summary"]:
        by_source.setdefault(row["source"].split()[0], {})[row["signal"]] = row
    assert set(by_source["llava-1.5"]) == {"cls_attn", *sd.STAND_INS}
    assert set(by_source["llava-onevision"]) == set(sd.STAND_INS)
    assert by_source["llava-1.5"]["cls_attn"]["num_patches"] == 576
    assert by_source["llava-onevision"]["mean_attn"]["num_patches"] == 729  # the base view
    assert by_source["llava-1.5"]["mean_attn"]["overlap_with_cls"] is not None
    assert by_source["llava-onevision"]["mean_attn"]["overlap_with_cls"] is None
    assert (out / sd.STATS_FILE).is_file() and (out / sd.SUMMARY_CSV).is_file()
    assert (out / "signal_dispersion.png").stat().st_size > 10_000
    assert json.loads((out / sd.STATS_FILE).read_text())["summary"] == stats["summary"]


def test_the_numbers_are_the_stats_of_the_towers_own_signals(run, tiny):
    stats, _, image = run
    _, model, processor, _ = tiny
    pixels = process_images([load_image(image)], processor, model.config)
    with torch.no_grad():
        sig = model.get_vision_tower()(pixels, needs=frozenset({"cls_attn", "pooled_query_attn"}))
    rows = {r["signal"]: r for r in stats["per_view"] if r["source"].startswith("llava-1.5")}
    want = concentration_summary(sig.pooled_query_attn[0].double().numpy())
    for key, value in want.items():
        assert rows["pooled_query_attn"][key] == pytest.approx(value, rel=1e-5, abs=1e-7)
    overlap = top_overlap(sig.pooled_query_attn[0].numpy(), sig.cls_attn[0].numpy(), 0.25)
    assert rows["pooled_query_attn"]["overlap_with_cls"] == pytest.approx(overlap)


def test_replot_and_bad_arguments(run, tmp_path):
    stats, out, _ = run
    png = tmp_path / "again.png"
    assert sd.main(["--replot", str(out / sd.STATS_FILE), "--out-png", str(png)]) == stats
    assert png.stat().st_size > 10_000
    with pytest.raises(SystemExit):
        sd.main(["--images", "assets/samples"])  # no source
    with pytest.raises(SystemExit):
        sd.main(["--random-tower", "clip-l-336", "--signals", "keys"])
    with pytest.raises(ValueError, match="--random-tower 'vit-g'"):
        sd.random_tower_sources(["vit-g"])


def test_mean_cumulative_curves_end_at_one(run):
    for c in run[0]["cumulative"]:
        assert c["curve"][-1] == pytest.approx(1.0) and np.all(np.diff(c["curve"]) >= -1e-12)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from llava.analysis.family_grids import get_grid_family, load

    out = tmp_path_factory.mktemp("qwen")
    return {name: load(get_grid_family(name).tiny(out / name)) for name in ("qwen2.5-vl", "qwen3-vl")}


def test_qwen_families_give_mean_attn_per_merged_token(qwen):
    from PIL import Image

    image = Image.open(sd.common.REPO / "assets" / "samples" / "stripes.png").convert("RGB")
    for name, (family, loaded) in qwen.items():
        (panel,) = family.grid(loaded, image)
        scores = family.signal_scores(loaded, image, ["mean_attn", "feature_norm"])  # feature_norm: not given
        assert set(scores) == {"mean_attn"} and scores["mean_attn"].shape == (1, len(panel.ids))
        torch.testing.assert_close(scores["mean_attn"].sum(), torch.tensor(1.0), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["qwen2.5-vl", "qwen3-vl"])
def test_qwen_refuses_a_stand_in_its_adapter_does_not_compute(qwen, name):
    from PIL import Image

    from llava.pruning import PruningConfig

    family, loaded = qwen[name]
    image = Image.new("RGB", (200, 120), (10, 200, 30))
    cfg = PruningConfig("fastervlm", 8, method_args={"cls_stand_in": "feature_norm"})
    with pytest.raises(ValueError, match=r"cls_stand_in='feature_norm' is not computed by this family's vision"):
        family.kept(loaded, image, cfg)
    assert len(family.kept(loaded, image, cfg.replace(method_args={"cls_stand_in": "mean_attn"}))) == 8
