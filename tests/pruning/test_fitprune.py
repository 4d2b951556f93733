"""FitPrune through the LLM loop, against a reference written from the official rule
(ywh187/FitPrune, LLaVA_1.5/llava/model/language_model/modeling_llama.py):

- an explicit-removal forward of the stock layers with eager attention, removing each layer's tokens
  right after that layer's attention as the official code does (head max of transformers' own
  attention weights, self x cross), for the kept sets, the prefill and the greedy answers;
- the presets, recipes and their errors; the search's threshold rule and FLOPs against the official
  loop and formula (statistical_analysis.py); the search command on the tiny model and inference with
  the recipe it writes; `model_vqa_loader` with the method.
"""

from __future__ import annotations

import json

import pytest
import torch

from llava.mm_utils import process_images
from llava.pruning import PruningConfig, parse_method_args
from llava.pruning.fitprune import NEXT_PRESETS, PRESETS, FitPruneDropper, load_recipe, resolve_recipe
from llava.pruning.fitprune_search import Dims, layer_flops, removal_count, schedule_flops

from in_llm_helpers import answer_metadata, left_padded, loop_greedy

REMOVED = (100, 50, 25, 0)  # the tiny LLM has 4 layers
KEPT = [476, 426, 401]  # image tokens from layers 1, 2, 3 on
QUESTIONS = ("What shapes are there?", "Describe the picture in detail please.", "Is it red?")


def config(**args) -> PruningConfig:
    return PruningConfig("fitprune", 576, method_args={"removed": REMOVED, **args})


@torch.no_grad()
def reference(model, embeds: torch.Tensor, span: tuple[int, int], prefill: int, removed=REMOVED):
    """The official rule on one unpadded row, written out with the stock layers (eager attention).

    embeds [1, T, H] hold the prefill (its first `prefill` tokens) and then any generated tokens. At
    layer i with removed[i] > 0, transformers' own attention weights [1, heads, T, T] of layer i are
    reduced by a max over heads; per remaining image token j, self_j = sum over the image rows of
    A[v, j] / n and cross_j = sum over the prompt's text rows after the image of A[t, j]; the removed[i]
    smallest cross * self leave after the attention (its output and the residual lose those rows), so
    the MLP of layer i and every later layer run without them. Positions are kept.
    -> (logits [T', V] of the prefill's last token and every generated one, kept per removing layer)
    """
    lm = model.get_model()
    start, end = span
    hidden = embeds
    origin = torch.arange(embeds.shape[1])
    pos = origin[None].clone()
    kept = []

    def causal(t):
        future = ~torch.ones(t, t, dtype=torch.bool).tril()
        return torch.zeros(1, 1, t, t).masked_fill(future, torch.finfo(torch.float32).min)

    for i, layer in enumerate(lm.layers):
        t = hidden.shape[1]
        out, weights = layer.self_attn(layer.input_layernorm(hidden), attention_mask=causal(t),
                                       position_embeddings=lm.rotary_emb(hidden, pos))  # weights [1, heads, T, T]
        residual = hidden
        if removed[i]:
            attn = weights[0].max(dim=0).values  # [T, T]
            image = torch.nonzero((origin >= start) & (origin < end)).flatten()
            text = torch.nonzero((origin >= end) & (origin < prefill)).flatten()
            n = len(image)
            self_part = (attn[image][:, image] / n).sum(dim=0)
            cross_part = attn[text][:, image].sum(dim=0)
            gone = image[torch.sort(cross_part * self_part, stable=True).indices[:removed[i]]]
            keep = torch.ones(t, dtype=torch.bool)
            keep[gone] = False
            out, residual, origin, pos = out[:, keep], residual[:, keep], origin[keep], pos[:, keep]
            kept.append((origin[(origin >= start) & (origin < end)] - start).tolist())
        hidden = residual + out
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    logits = model.lm_head(lm.norm(hidden))[0]
    return logits[origin >= prefill - 1], kept


def test_prefill_decode_and_kept_sets_equal_the_eager_reference(tiny, eager, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, _ = left_padded(tokenizer, QUESTIONS[:1])
    pixels = process_images(sample_images[:1], processor, model.config)
    mm = model.prepare_multimodal_inputs(ids, pixels, padding_side="left", pruning=PruningConfig())
    dropper = FitPruneDropper(mm.image_spans, [576], model.config.num_hidden_layers, removed=REMOVED)
    loop, ours, tokens = loop_greedy(model, mm, dropper, 4)
    t = mm.inputs_embeds.shape[1]
    full = torch.cat([mm.inputs_embeds, model.get_model().embed_tokens(torch.stack(tokens, 1))], dim=1)
    ref, kept = reference(eager, full, mm.image_spans[0][0], t)
    assert [s.tolist() for s in dropper.stages[0]] == kept
    assert [len(s) for s in kept] == KEPT
    torch.testing.assert_close(torch.cat(ours), ref, atol=5e-5, rtol=1e-5)
    # layer i keeps the keys of the tokens it removes (as the official cache does); later layers do not
    text = t - 576
    assert loop.kv_lengths() == [t + 4, text + 476 + 4, text + 426 + 4, text + 401 + 4]


def test_scores_are_the_head_max_self_times_cross_of_transformers_attentions(tiny, eager, sample_images):
    """The first removing layer's scores against `output_attentions=True` of transformers' own LLaMA."""
    tokenizer, model, processor, _ = tiny
    ids, _ = left_padded(tokenizer, QUESTIONS[1:2])
    pixels = process_images(sample_images[1:2], processor, model.config)
    mm = model.prepare_multimodal_inputs(ids, pixels, padding_side="left", pruning=PruningConfig())
    dropper = FitPruneDropper(mm.image_spans, [576], 4, removed=(0, 0, 30, 0))
    loop_greedy(model, mm, dropper, 0)
    (start, end), = mm.image_spans[0]
    with torch.no_grad():
        attentions = eager.get_model()(inputs_embeds=mm.inputs_embeds, position_ids=mm.position_ids,
                                       output_attentions=True).attentions
    attn = attentions[2][0].max(dim=0).values  # [heads, T, T] -> [T, T]
    self_part = attn[start:end, start:end].sum(dim=0) / 576
    cross_part = attn[end:, start:end].sum(dim=0)
    torch.testing.assert_close(dropper.scores[2][0], cross_part * self_part, rtol=1e-4, atol=1e-9)
    expected = torch.sort(cross_part * self_part).indices[30:].sort().values
    assert dropper.kept[0].tolist() == expected.tolist()


def test_greedy_answers_equal_the_explicit_removal_reference(tiny, eager, sample_images):
    """Left-padded rows of different lengths through `generate`; the reference runs each row unpadded on
    its prompt and the answer so far, and its greedy choice at every step must be the token we chose."""
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS[1:])
    pixels = process_images(sample_images[1:], processor, model.config)
    ours = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=5, do_sample=False, pad_token_id=0,
                          pruning=config())
    report = model.last_multimodal.in_llm
    assert report["layers"] == [1, 2, 3] and report["kept_per_stage"] == [KEPT] * 2
    assert report["per_layer"] == [[576, *KEPT]] * 2
    assert report["layer_averaged"] == [pytest.approx((576 + sum(KEPT)) / 4)] * 2
    for b in range(2):
        row = ids[b][mask[b].bool()][None]
        mm = model.prepare_multimodal_inputs(row, pixels[b:b + 1], padding_side="left", pruning=PruningConfig())
        answer = ours[b][None]  # [1, 5]
        embeds = torch.cat([mm.inputs_embeds, model.get_model().embed_tokens(answer[:, :-1])], dim=1)
        logits, kept = reference(eager, embeds, mm.image_spans[0][0], mm.inputs_embeds.shape[1])
        assert logits.argmax(dim=-1).tolist() == answer[0].tolist(), f"row {b}"
        assert model.last_multimodal.kept_indices[b].tolist() == kept[-1]


def test_presets_and_arguments():
    assert sorted(PRESETS) == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9]
    assert all(len(s) == 32 and s[-1] == 0 for s in PRESETS.values())
    # the official tables' totals and a few entries (modeling_llama.py, delete_scheme)
    assert [sum(PRESETS[r]) for r in sorted(PRESETS)] == [0, 66, 149, 264, 336, 403, 424, 449, 488, 514, 539]
    assert PRESETS[0.5][:8] == (3, 7, 49, 24, 29, 17, 59, 41) and PRESETS[0.9][:3] == (262, 153, 80)
    default = resolve_recipe(32)
    assert default.removed == PRESETS[0.6] and default.num_tokens == 576 and default.reduction_ratio == 0.6
    assert resolve_recipe(32, reduction_ratio=0.5).kept()[:3] == [573, 566, 517]
    assert parse_method_args("reduction_ratio=0.5", "fitprune") == {"reduction_ratio": 0.5}
    assert parse_method_args("removed=3:2:1:0", "fitprune") == {"removed": (3, 2, 1, 0)}
    assert parse_method_args("recipe=out/recipe.json", "fitprune") == {"recipe": "out/recipe.json"}
    with pytest.raises(ValueError, match=r"reduction_ratio=0.45 is not a LLaVA-1.5 .* preset; presets: 0.0, .*0.55"):
        resolve_recipe(32, reduction_ratio=0.45)
    with pytest.raises(ValueError, match=r"schedule of a 32-layer LLM \(llava-v1.5-7b\), but this LLM has 4 layers; "
                                         "run the search"):
        resolve_recipe(4)
    with pytest.raises(ValueError, match="takes one of reduction_ratio=, recipe=, removed="):
        resolve_recipe(4, reduction_ratio=0.5, removed=REMOVED)
    with pytest.raises(ValueError, match="is for a 4-layer LLM, but this LLM has 32 layers"):
        resolve_recipe(32, removed=REMOVED)
    with pytest.raises(ValueError, match="last layer removes 5"):
        resolve_recipe(4, removed=(1, 1, 1, 5))
    with pytest.raises(ValueError, match="at least one must stay"):
        resolve_recipe(4, removed=(300, 300, 0, 0))
    with pytest.raises(ValueError, match="not from the budget: got --visual-token-num 144 .* \\(pass 576\\)"):
        FitPruneDropper([[(0, 576)]], [144], 4, removed=REMOVED)
    # removed= counts apply to any image size
    assert FitPruneDropper([[(0, 2880)]], [None], 4, removed=REMOVED).recipes[0].kept() == [2780, 2730, 2705, 2705]


def test_llava_next_presets_scale_the_official_2880_token_tables():
    """LLaVA_NEXT/llava/model/language_model/modeling_llama.py: delete_scheme[i] * n / 2880, truncated."""
    assert sorted(NEXT_PRESETS) == [0.0, 0.4, 0.6]
    assert [sum(NEXT_PRESETS[r]) for r in (0.4, 0.6)] == [1512, 2096]
    assert NEXT_PRESETS[0.6][:4] == (98, 313, 279, 218) and NEXT_PRESETS[0.4][:4] == (7, 73, 162, 124)
    two_by_two = resolve_recipe(32, 2928, reduction_ratio=0.6)  # 576 + a 2 x 2 grid: 48 rows of 48 + 1 newline
    assert two_by_two.removed[:4] == (99, 318, 283, 221) and two_by_two.source.startswith("LLaVA-NeXT preset")
    assert resolve_recipe(32, 2880, reduction_ratio=0.4).removed == NEXT_PRESETS[0.4]
    with pytest.raises(ValueError, match=r"reduction_ratio=0.5 is not a LLaVA-NeXT .* preset; presets: 0.0, 0.4, 0.6"):
        resolve_recipe(32, 2928, reduction_ratio=0.5)
    with pytest.raises(ValueError, match=r"32-layer LLM \(llava-v1.6-7b\), but this LLM has 4 layers"):
        resolve_recipe(4, 2928, reduction_ratio=0.6)


def test_recipe_files_are_checked(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"num_layers": 4, "num_tokens": 576, "removed": [10, 5, 0, 0],
                                "kept": [566, 561, 561, 561]}))
    assert load_recipe(good).removed == (10, 5, 0, 0)
    assert resolve_recipe(4, recipe=str(good)).source == str(good)
    with pytest.raises(ValueError, match=f"recipe {good} is for a 4-layer LLM, but this LLM has 32 layers"):
        resolve_recipe(32, recipe=str(good))
    wrong_tokens = tmp_path / "next.json"
    wrong_tokens.write_text(json.dumps({"num_tokens": 2880, "removed": [10, 0, 0, 0]}))
    with pytest.raises(ValueError, match=f"recipe {wrong_tokens} is for images of 2880 tokens, but this image has 576"):
        FitPruneDropper([[(5, 581)]], [576], 4, recipe=str(wrong_tokens))
    with pytest.raises(ValueError, match="not found"):
        load_recipe(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match=f"recipe {bad} is not a recipe JSON"):
        load_recipe(bad)
    inconsistent = tmp_path / "kept.json"
    inconsistent.write_text(json.dumps({"num_tokens": 576, "removed": [10, 0, 0, 0], "kept": [1, 1, 1, 1]}))
    with pytest.raises(ValueError, match="does not follow from 'removed'"):
        load_recipe(inconsistent)


def official_removal_count(values: torch.Tensor, reference: float, alpha: float) -> int:
    """statistical_analysis.py's loop, written out (with n - 1 where it would reuse a stale count)."""
    order = torch.argsort(values.double(), stable=True)
    total = values.double().sum()
    for i in range(len(order)):
        if total - values.double()[order[:i]].sum() < reference - reference * alpha:
            return max(i - 1, 0)
    return len(values) - 1


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.37, 0.5, 0.9, 1.0])
def test_threshold_rule_equals_the_official_loop(alpha):
    gen = torch.Generator().manual_seed(3)
    values = torch.rand(50, generator=gen) ** 3
    for reference in (float(values.sum()), float(values.sum()) * 0.8, float(values.sum()) * 1.3):
        assert removal_count(values, reference, alpha) == official_removal_count(values, reference, alpha)


def test_flops_follow_the_official_formula_at_7b():
    """statistical_analysis.py's calculate_origin_flops and its per-layer charges, at LLaVA-1.5-7B's widths."""
    dims = Dims(4096, 4096, 11008)
    origin = ((576 * 4096 * 4096 * 3 + 576 * 576 * 4096 + 576 * 4096 * 576 + 576 * 4096 * 4096)
              + (4096 * 11008 * 576 * 3)) * 32
    assert schedule_flops(576, [0] * 32, dims) == origin
    n, kept = 500, 450  # q/k/v and attention on n, o_proj and FFN on the kept
    official = n * 4096 ** 2 * 3 + n ** 2 * 4096 * 2 + kept * 4096 ** 2 + 3 * 11008 * 4096 * kept
    assert layer_flops(n, kept, dims) == official
    # the presets meet their budgets (METHODS.md's table)
    assert schedule_flops(576, PRESETS[0.5], dims) / origin == pytest.approx(0.503, abs=5e-4)
    assert schedule_flops(576, PRESETS[0.9], dims) / origin == pytest.approx(0.103, abs=5e-4)
    assert sum(resolve_recipe(32, reduction_ratio=0.5).seen()) / 32 == pytest.approx(301.8, abs=0.05)


@torch.no_grad()
def official_fit(model, rows, alpha: float, ratio: float, dims: Dims):
    """statistical_analysis.py's compute_attention_weights and fit_model, written out layer-major on the
    stock layers (eager attention): rows are (embeds [1, T, H], (start, end)) of unpadded prompts."""
    lm = model.get_model()
    num_layers, d, m = len(lm.layers), dims.hidden, dims.intermediate

    def causal(t):
        future = ~torch.ones(t, t, dtype=torch.bool).tril()
        return torch.zeros(1, 1, t, t).masked_fill(future, torch.finfo(torch.float32).min)

    masses = []  # per row, per layer: (cross, self) of the unpruned model, from output_attentions
    for embeds, (start, end) in rows:
        heads_max = [a[0].max(dim=0).values for a in lm(inputs_embeds=embeds, output_attentions=True).attentions]
        masses.append([(float(a[end:, start:end].sum()) / (embeds.shape[1] - end),
                        float(a[start:end, start:end].sum()) / (end - start)) for a in heads_max])
    state = [[embeds, torch.arange(embeds.shape[1])[None], start, end - start] for embeds, (start, end) in rows]
    origin = ((576 * d * d * 3 + 576 * 576 * d + 576 * d * 576 + 576 * d * d) + (d * m * 576 * 3)) * num_layers
    already, scheme = 0, [0] * num_layers
    for i, layer in enumerate(lm.layers):
        forecast = 0
        for _, _, _, left in state:
            already += left * d ** 2 * 3 + left ** 2 * d * 2
            forecast += left * d ** 2 + 3 * m * d * left + (num_layers - 1 - i) * (
                left * d * d * 3 + left * left * d + left * d * left + left * d * d + d * m * left * 3)
        if (already + forecast) / len(rows) <= origin * (1 - ratio):
            return True, [s // len(rows) for s in scheme]
        for row, (hidden, pos, start, left) in enumerate(state):
            t = hidden.shape[1]
            out, weights = layer.self_attn(layer.input_layernorm(hidden), attention_mask=causal(t),
                                           position_embeddings=lm.rotary_emb(hidden, pos))
            attn = weights[0].max(dim=0).values
            focus = attn[start + left:, start:start + left].sum(dim=0) / (t - start - left)
            own = (attn[start:start + left, start:start + left] / left).sum(dim=0)
            cross_mass, self_mass = masses[row][i]
            del_cross = torch.argsort(focus, stable=True)[:official_removal_count(focus, cross_mass, alpha)]
            del_self = torch.argsort(own, stable=True)[:official_removal_count(own, self_mass, alpha)]
            both = [j for j in del_cross.tolist() if j in set(del_self.tolist())]
            scheme[i] += len(both)
            keep = torch.ones(t, dtype=torch.bool)
            keep[[start + j for j in both]] = False
            hidden = hidden[:, keep] + out[:, keep]
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            left -= len(both)
            state[row] = [hidden, pos[:, keep], start, left]
            already += left * d ** 2 + 3 * m * d * left
    return False, [s // len(rows) for s in scheme]


@pytest.mark.parametrize("alpha", [0.2, 0.45])
def test_fit_equals_the_official_layer_by_layer_fit(tiny, eager, tmp_path, alpha):
    from pathlib import Path

    from llava.pruning.fitprune_search import ReferenceMass, fit, load_samples, prefill

    tokenizer, model, processor, _ = tiny
    questions = tmp_path / "calib.jsonl"
    questions.write_text(json.dumps({"question_id": 0, "image": "shapes.png", "text": "What shapes are in it?"}) + "\n"
                         + json.dumps({"question_id": 1, "image": "scene.png", "text": "Is it red?"}) + "\n")
    samples = load_samples(model, tokenizer, processor, str(questions),
                           str(Path(__file__).resolve().parents[2] / "assets" / "samples"), "llava_v1", None)
    refs = []
    for sample in samples:
        refs.append(ReferenceMass(sample.span, 4))
        prefill(model, sample, refs[-1])
    reached, removed = fit(model, samples, refs, alpha, 0.5, 576)
    official = official_fit(eager, [(s.inputs_embeds, s.span) for s in samples], alpha, 0.5, Dims.of(model.config))
    assert reached and official[0]
    assert list(removed) == official[1] and sum(removed) > 0


def test_search_command_writes_a_recipe_that_inference_follows(tiny, tiny_path, tmp_path, sample_images):
    from pathlib import Path

    from llava.pruning.fitprune_search import main

    samples = Path(__file__).resolve().parents[2] / "assets" / "samples"
    questions = tmp_path / "calib.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "image": img, "text": text}) + "\n" for i, (img, text) in
                                 enumerate([("shapes.png", "What shapes are in the image?"),
                                            ("scene.png", "Is there a house in the image?")])))
    out = tmp_path / "recipe.json"
    data = main(["--model-path", tiny_path, "--question-file", str(questions), "--image-folder", str(samples),
                 "--reduction-ratio", "0.5", "--output", str(out), "--device", "cpu", "--tolerance", "0.5"])
    written = json.loads(out.read_text())
    assert written == data
    assert written["num_layers"] == 4 and written["num_tokens"] == 576 and written["reduction_ratio"] == 0.5
    assert written["model"] == tiny_path and written["calibration"]["questions"] == 2
    removed = written["removed"]
    assert len(removed) == 4 and removed[-1] == 0 and sum(removed) > 0
    dims = Dims.of(tiny[1].config)
    full = schedule_flops(576, [0] * 4, dims)
    assert written["flops_ratio"] == pytest.approx(schedule_flops(576, removed, dims) / full)
    assert written["kept"] == load_recipe(out).kept()
    # inference with the recipe removes exactly its counts
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS[:2])
    pixels = process_images(sample_images[:2], processor, model.config)
    model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=2, do_sample=False, pad_token_id=0,
                   pruning=PruningConfig("fitprune", 576, method_args={"recipe": str(out)}))
    report = model.last_multimodal.in_llm
    layers = [i + 1 for i, r in enumerate(removed) if r]
    assert report["layers"] == layers
    assert report["kept_per_stage"] == [[written["kept"][i - 1] for i in layers]] * 2
    assert report["per_layer"] == [[576] + written["kept"][:3]] * 2


def test_search_errors(tiny_path, tmp_path):
    from llava.pruning.fitprune_search import main

    questions = tmp_path / "calib.jsonl"
    questions.write_text(json.dumps({"question_id": 7, "image": "nope.png", "text": "What?"}) + "\n")
    with pytest.raises(ValueError, match="question 7: image file .*nope.png not found"):
        main(["--model-path", tiny_path, "--question-file", str(questions), "--image-folder", str(tmp_path),
              "--output", str(tmp_path / "r.json"), "--device", "cpu"])


def test_llava_next_anyres_image(next_model, sample_images):
    """An anyres image (base view, grid and newline slots) through the loop with a per-layer schedule."""
    from llava.eval.runner import build_prompt
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.mm_utils import tokenizer_image_token

    tokenizer, model, processor, _ = next_model
    image = sample_images[2]
    ids = torch.tensor([tokenizer_image_token(build_prompt("Is it red?", "vicuna_v1", True), tokenizer,
                                              IMAGE_TOKEN_INDEX)])
    pixels = process_images([image], processor, model.config)
    model.generate(ids, images=pixels, image_sizes=[image.size], max_new_tokens=2, do_sample=False,
                   pruning=PruningConfig("fitprune", method_args={"removed": (200, 100, 0, 0)}))
    n = model.last_multimodal.token_counts[0]
    report = model.last_multimodal.in_llm
    assert n > 576 and report["per_layer"] == [[n, n - 200, n - 300, n - 300]]
    assert len(model.last_multimodal.kept_indices[0]) == n - 300


def test_fitprune_through_model_vqa_loader(tiny_path, tmp_path):
    meta = answer_metadata(tiny_path, tmp_path, "fitprune", 576, "removed=100:50:25:0")
    assert meta["pruning_method"] == "fitprune" and meta["visual_tokens"] == 576
    assert meta["prune_layer"] == 1 and meta["visual_tokens_after_layer"] == 476
    assert meta["prune_layers"] == [1, 2, 3] and meta["visual_tokens_after_layers"] == KEPT
    assert meta["layer_averaged_visual_tokens"] == pytest.approx((576 + sum(KEPT)) / 4)


def test_search_help_lists_the_flags(capsys):
    from llava.pruning.fitprune_search import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model-path", "--question-file", "--image-folder", "--reduction-ratio", "--output", "--debug"):
        assert flag in out
