"""SparseVLM (v1) through the LLM loop, against a plain reference written from the official rule
(Gumpest/SparseVLMs, tag v1.5: llava/model/language_model/modelling_sparse_llama.py, score.py, utils.py):

- a reference loop over the stock decoder layers of one unpadded row, with eager attention weights
  (`output_attentions=True`), that picks the raters, scores, prunes, recycles and renumbers as the
  official forward does: the kept tokens, the cluster tokens' values, the logits of the prefill and
  of the decode steps (a full recompute: causal prefill tokens never see the generated ones);
- greedy answers, batch = singles, the KV cache per layer, the accounting and the arguments.
"""

from __future__ import annotations

import pytest
import torch

from llava.mm_utils import process_images
from llava.pruning import PruningConfig, parse_method_args
from llava.pruning.sparsevlm import OFFICIAL_SCHEDULES, SparseVLMDropper, cluster_merge, schedule_for
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from in_llm_helpers import answer_metadata, left_padded, loop_greedy

SPARSE = (0, 2)  # the tiny LLM has 4 layers: tokens leave after layers 0 and 2
KEEP = (66, 30)
QUESTIONS = ("What shapes are there?", "Describe the picture in detail please.", "Is it red?")


def config(**args) -> PruningConfig:
    return PruningConfig("sparsevlm", 64, method_args={"layers": SPARSE, "keep": KEEP, **args})


def official_clusters(x: torch.Tensor, c: int) -> torch.Tensor:
    """DPC-KNN merge as utils.cluster_and_merge writes it (one row, without its 1e-6 tie noise): x [M, H] -> [C, H]."""
    m, h = x.shape
    dist = (x[:, None, :] - x[None, :, :]).norm(dim=-1, p=2) / h**0.5  # [M, M]
    near, _ = torch.topk(dist, k=c, dim=-1, largest=False)
    density = (-(near**2).mean(dim=-1)).exp()
    mask = (density[None, :] > density[:, None]).float()
    delta, _ = (dist * mask + dist.max() * (1 - mask)).min(dim=-1)
    score = delta * density
    centres = torch.sort(score, descending=True, stable=True).indices[:c]
    assign = dist[centres].argmin(dim=0)
    assign[centres] = torch.arange(c)
    out = torch.zeros(c, h)
    for j in range(c):
        members = x[assign == j]
        out[j] = members.sum(dim=0) / (len(members) + 1e-6)
    return out


def top(values: torch.Tensor, k: int) -> torch.Tensor:
    """torch.topk's indices (largest first) with ties to the lower index."""
    return torch.sort(values, descending=True, stable=True).indices[:k]


@torch.no_grad()
def reference(model, embeds: torch.Tensor, span: tuple[int, int], prefill: int, layers=SPARSE, keep=KEEP,
              merge: bool = True, version: int = 1, heads: int = 2):
    """The official forward on one unpadded row, with the stock layers and eager attention weights.

    version 1 (SparseVLM), or 2 (SparseVLM+: attention divided by the RoPE-only logits of all-ones
    q/k, the `heads` heads with the most rater-to-image attention, no recycling, positions kept).

    embeds [1, T, H]: the prefill (its first `prefill` tokens), then any generated tokens. Returns
    (logits [T', V] of the prefill's last token and each generated one, per stage the kept image
    positions (recycled tokens aside), per stage the visual-token count, per stage the cluster tokens).
    """
    lm = model.get_model()
    v_start, end = span
    # raters: softmax over the text of each visual token's dot products, averaged over the visual tokens
    v_t, t_t = embeds[0, v_start:end], embeds[0, end:prefill]
    m_v_t = (v_t @ t_t.T).softmax(dim=1).mean(dim=0)
    raters = torch.nonzero(m_v_t > m_v_t.mean()).flatten()  # relative to the text start
    v_num = end - v_start
    tags = list(range(v_num))  # what each visual slot holds: an image position or "c" (a cluster token)
    hidden = embeds
    pos = torch.arange(embeds.shape[1])[None]
    kept_stages, counts, clusters = [], [], []

    def causal(t):
        future = ~torch.ones(t, t, dtype=torch.bool).tril()
        return torch.zeros(1, 1, t, t).masked_fill(future, torch.finfo(torch.float32).min)

    for i, layer in enumerate(lm.layers):
        t = hidden.shape[1]
        if version == 1:
            pos = torch.arange(t)[None]  # v1's position ids: 0..len-1 whatever was removed
        out = layer(hidden, attention_mask=causal(t), position_embeddings=lm.rotary_emb(hidden, pos), position_ids=pos)
        out = out[0] if isinstance(out, tuple) else out
        if i in layers:
            stage = layers.index(i)
            _, weights = layer.self_attn(layer.input_layernorm(hidden), attention_mask=causal(t),
                                         position_embeddings=lm.rotary_emb(hidden, pos), output_attentions=True)
            text_start = v_start + v_num
            rows = raters + text_start
            if version == 2:
                cos, sin = lm.rotary_emb(hidden, pos)
                ones = torch.ones(1, weights.shape[1], t, cos.shape[-1])
                q1, k1 = apply_rotary_pos_emb(ones, ones, cos, sin)
                weights = weights / (q1 @ k1.transpose(2, 3) / cos.shape[-1] ** 0.5)
                per_head = weights[0][:, rows, v_start:text_start].sum(dim=(1, 2))
                weights = weights[:, top(per_head, heads)]
            rel = weights.mean(dim=1)[0, rows, v_start:text_start].mean(dim=0)  # [v_num]
            k = min(keep[stage], v_num - 1)
            chosen = top(rel, k).sort().values
            pruned = torch.tensor([j for j in range(v_num) if j not in set(chosen.tolist())])
            visual = out[0, v_start:text_start]
            parts = [out[0, :v_start], visual[chosen]]
            new_tags = [tags[j] for j in chosen.tolist()]
            if merge:
                m = int(len(pruned) * 0.3) + 1
                best = pruned[top(rel[pruned], m)]
                c = official_clusters(visual[best], m // 10 + 1)
                clusters.append(c)
                parts.append(c)
                new_tags += ["c"] * len(c)
            hidden = torch.cat([*parts, out[0, text_start:]])[None]
            pos = torch.cat([pos[:, :v_start], pos[:, v_start + chosen], pos[:, text_start:]], dim=1)
            tags, v_num = new_tags, len(new_tags)
            kept_stages.append([p for p in tags if p != "c"])
            counts.append(v_num)
        else:
            hidden = out
    logits = model.lm_head(lm.norm(hidden))[0]
    t = hidden.shape[1]
    return logits[t - (embeds.shape[1] - prefill) - 1:], kept_stages, counts, clusters


@pytest.mark.parametrize("merge", [True, False])
def test_prefill_and_decode_equal_the_official_reference(tiny, eager, sample_images, merge):
    tokenizer, model, processor, _ = tiny
    ids, _ = left_padded(tokenizer, QUESTIONS[1:2])
    pixels = process_images(sample_images[1:2], processor, model.config)
    mm = model.prepare_multimodal_inputs(ids, pixels, padding_side="left", pruning=PruningConfig())
    dropper = SparseVLMDropper(mm.image_spans, [64], model.config.num_hidden_layers, layers=SPARSE, keep=KEEP,
                               merge=merge)
    loop, ours, tokens = loop_greedy(model, mm, dropper, 4)
    t = mm.inputs_embeds.shape[1]
    full = torch.cat([mm.inputs_embeds, model.get_model().embed_tokens(torch.stack(tokens, 1))], dim=1)
    ref, kept, counts, clusters = reference(eager, full, mm.image_spans[0][0], t, merge=merge)
    report = dropper.report()
    assert dropper.kept[0].tolist() == kept[-1]
    assert report["kept_per_stage"] == [counts] and report["layers"] == [1, 3] and report["sparse_layers"] == [0, 2]
    n_clusters = [len(c) for c in clusters]
    if merge:
        # 576 -> 66 kept, 510 pruned: the best int(0.3 * 510) + 1 = 154 recycled into 154 // 10 + 1 = 16 clusters
        assert n_clusters[0] == 16 and counts[0] == 66 + 16
        assert counts[1] == 30 + n_clusters[1] and len(kept[1]) < 30  # cluster tokens compete at the next stage
        for mine, theirs in zip(dropper.recycled_tokens[0], clusters):
            torch.testing.assert_close(mine, theirs, atol=5e-5, rtol=1e-4)  # eager vs SDPA hidden states
    else:
        assert counts == [66, 30] and dropper.recycled_tokens[0] == []
    # eager reference vs the SDPA loop: fp32 round-off
    torch.testing.assert_close(torch.cat(ours), ref, atol=5e-5, rtol=1e-5)
    # the cache: layers 0 (the sparse layer runs on everything), 1-2, 3, plus the 4 decoded tokens
    text = t - 576
    assert loop.kv_lengths() == [t + 4, text + counts[0] + 4, text + counts[0] + 4, text + counts[1] + 4]


def test_version_2_equals_the_official_reference(tiny, eager, sample_images):
    """SparseVLM+: gravity-corrected scores of the top heads, no recycling, positions kept (decode included)."""
    tokenizer, model, processor, _ = tiny
    ids, _ = left_padded(tokenizer, QUESTIONS[:1])
    pixels = process_images(sample_images[:1], processor, model.config)
    mm = model.prepare_multimodal_inputs(ids, pixels, padding_side="left", pruning=PruningConfig())
    dropper = SparseVLMDropper(mm.image_spans, [64], 4, layers=SPARSE, keep=KEEP, version=2, heads=2)
    assert not dropper.renumber_positions and not dropper.merge
    loop, ours, tokens = loop_greedy(model, mm, dropper, 4)
    t = mm.inputs_embeds.shape[1]
    full = torch.cat([mm.inputs_embeds, model.get_model().embed_tokens(torch.stack(tokens, 1))], dim=1)
    ref, kept, counts, _ = reference(eager, full, mm.image_spans[0][0], t, merge=False, version=2, heads=2)
    assert counts == [66, 30] and dropper.report()["kept_per_stage"] == [counts]
    assert [len(k) for k in kept] == [66, 30] and dropper.kept[0].tolist() == kept[-1]
    v1 = SparseVLMDropper(mm.image_spans, [64], 4, layers=SPARSE, keep=KEEP, merge=False)
    loop_greedy(model, mm, v1, 0)
    assert v1.kept[0].tolist() != kept[-1]  # the correction and the head choice change the kept set
    torch.testing.assert_close(torch.cat(ours), ref, atol=5e-5, rtol=1e-5)
    # its own schedules: 64 -> 66/34/20, 96 -> 246/54/28, 128 -> 238/108/60, 192 -> 300/200/118
    assert [schedule_for(k, 2) for k in (64, 96, 128, 192)] == [(66, 34, 20), (246, 54, 28), (238, 108, 60),
                                                                (300, 200, 118)]
    with pytest.raises(ValueError, match="exceeds the LLM's 4 attention heads"):
        loop_greedy(model, mm, SparseVLMDropper(mm.image_spans, [64], 4, layers=SPARSE, keep=KEEP, version=2), 0)


def test_cluster_merge_equals_the_official_formula():
    gen = torch.Generator().manual_seed(0)
    for m, c in [(154, 16), (16, 2), (5, 1), (1, 1)]:
        x = torch.randn(m, 24, generator=gen)
        torch.testing.assert_close(cluster_merge(x, c), official_clusters(x, c), atol=1e-6, rtol=1e-6)


def test_greedy_answers_batch_equals_singles_and_accounting(tiny, eager, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS)
    pixels = process_images(sample_images, processor, model.config)
    batched = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             pad_token_id=0, pruning=config())
    report = model.last_multimodal.in_llm
    kept = [k.tolist() for k in model.last_multimodal.kept_indices]
    for b in range(3):
        row = ids[b][mask[b].bool()][None]
        single = model.generate(row, images=pixels[b:b + 1], max_new_tokens=6, do_sample=False, pruning=config())
        assert batched[b].tolist() == single[0].tolist()
        assert model.last_multimodal.kept_indices[0].tolist() == kept[b]
        # the explicit-removal reference, fed the answer: its greedy choice at every step is the answer
        mm = eager.prepare_multimodal_inputs(row, pixels[b:b + 1], padding_side="left", pruning=PruningConfig())
        embeds = torch.cat([mm.inputs_embeds, eager.get_model().embed_tokens(single[:, :-1])], dim=1)
        logits, ref_kept, counts, _ = reference(eager, embeds, mm.image_spans[0][0], mm.inputs_embeds.shape[1])
        assert logits.argmax(dim=-1).tolist() == single[0].tolist()
        assert ref_kept[-1] == kept[b] and report["kept_per_stage"][b] == counts
        c1, c2 = counts
        assert report["layer_averaged"][b] == pytest.approx((576 + 2 * c1 + c2) / 4)
        assert report["recycled_per_stage"][b][0] == 16 and c2 - report["recycled_per_stage"][b][1] == len(kept[b])
    assert report["layer"] == 1 and report["kept_after_layer"] == [66 + 16] * 3


def test_no_pruning_at_full_budget_and_keep_alone(tiny, sample_images):
    tokenizer, model, processor, _ = tiny
    ids, mask = left_padded(tokenizer, QUESTIONS[:2])
    pixels = process_images(sample_images[:2], processor, model.config)
    full = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=5, do_sample=False,
                          pruning=PruningConfig())
    same = model.generate(ids, images=pixels, attention_mask=mask, max_new_tokens=5, do_sample=False,
                          pruning=PruningConfig("sparsevlm", 576, method_args={"layers": SPARSE, "keep": KEEP}))
    assert same.tolist() == full.tolist()
    assert model.last_multimodal.in_llm["kept_per_stage"] == [[576, 576]] * 2
    # keep= without --visual-token-num runs the schedule too
    model.generate(ids[:1], images=pixels[:1], attention_mask=mask[:1], max_new_tokens=1, do_sample=False,
                   pruning=PruningConfig("sparsevlm", method_args={"layers": SPARSE, "keep": KEEP, "merge": False}))
    assert model.last_multimodal.in_llm["kept_per_stage"] == [[66, 30]]


def test_schedules_and_arguments():
    assert OFFICIAL_SCHEDULES == {64: (66, 30, 17), 96: (238, 48, 26), 128: (303, 110, 36), 192: (300, 200, 110)}
    assert [schedule_for(k) for k in (64, 96, 128, 192)] == [(66, 30, 17), (238, 48, 26), (303, 110, 36),
                                                             (300, 200, 110)]
    # other budgets: the nearest official schedule scaled by K / K_official
    assert schedule_for(100) == (248, 50, 27) and schedule_for(80) == (82, 38, 21)
    assert schedule_for(288) == (450, 300, 165) and schedule_for(432) == (675, 450, 248)
    assert schedule_for(144) == (341, 124, 40) and schedule_for(58) == (60, 27, 15) and schedule_for(29) == (30, 14, 8)
    assert parse_method_args("layers=2:6:15,keep=300:200:110,merge=false,version=1", "sparsevlm") == \
        {"layers": (2, 6, 15), "keep": (300, 200, 110), "merge": False, "version": 1}
    dropper = SparseVLMDropper([[(35, 611)]], [192], 32)
    assert dropper.drop_layers == (3, 7, 16) and dropper.probe_layers == (2, 6, 15)
    assert dropper.schedules == [(300, 200, 110)]
    assert SparseVLMDropper([[(35, 611)]], [192], 32, version=2).schedules == [(300, 200, 118)]
    with pytest.raises(ValueError, match="version=3 is not one of 1"):
        SparseVLMDropper([[(35, 611)]], [192], 32, version=3)
    with pytest.raises(ValueError, match="SparseVLM\\+ \\(version=2\\) keeps positions and does not recycle"):
        SparseVLMDropper([[(35, 611)]], [192], 32, version=2, merge=True)
    with pytest.raises(ValueError, match="at least 2 apart"):
        SparseVLMDropper([[(35, 611)]], [192], 32, layers=(2, 3, 15))
    with pytest.raises(ValueError, match=r"within \[0, 2\] for a 4-layer LLM"):
        SparseVLMDropper([[(35, 611)]], [192], 4)
    with pytest.raises(ValueError, match="one positive keep count per sparse layer"):
        SparseVLMDropper([[(35, 611)]], [192], 32, keep=(300, 200))
    with pytest.raises(ValueError, match="give keep= with one count per layer"):
        SparseVLMDropper([[(35, 611)]], [192], 32, layers=(2, 6))
    with pytest.raises(ValueError, match="needs its retained-token budget"):
        SparseVLMDropper([[(35, 611)]], [None], 32)


def test_sparsevlm_through_model_vqa_loader(tiny_path, tmp_path):
    meta = answer_metadata(tiny_path, tmp_path, "sparsevlm", 64, "layers=0:2,keep=66:30")
    assert meta["pruning_method"] == "sparsevlm" and meta["visual_tokens"] == 576
    assert meta["prune_layer"] == 1 and meta["visual_tokens_after_layer"] == 66 + 16
    assert meta["prune_layers"] == [1, 3] and meta["visual_tokens_after_layers"][0] == 82
    after = meta["visual_tokens_after_layers"][1]
    assert meta["layer_averaged_visual_tokens"] == pytest.approx((576 + 2 * 82 + after) / 4)


@pytest.mark.parametrize("k, counts", [(64, [82, 32, 18]), (128, [312, 117, 39]), (192, [309, 204, 113])])
def test_official_layers_and_schedules_on_a_32_layer_llm(k, counts):
    """Defaults (layers 2/6/15, the budget's schedule, recycling) on a narrow 32-layer LLaMA: the counts
    per stage are the schedule plus int((0.3 * pruned + 1) / 10) + 1 clusters, whatever the scores."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llava.model.llm_loop import LLMLoop

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=32,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024)
    llm = LlamaForCausalLM(cfg).eval()
    t = 35 + 576 + 20
    embeds = torch.randn(1, t, 32)
    dropper = SparseVLMDropper([[(35, 611)]], [k], 32)
    loop = LLMLoop(llm.model, llm.lm_head, dropper)
    loop.prefill(embeds, torch.ones(1, t, dtype=torch.long), torch.arange(t)[None])
    report = dropper.report()
    assert report["layers"] == [3, 7, 16] and report["kept_per_stage"] == [counts]
    seen = [576] * 3 + [counts[0]] * 4 + [counts[1]] * 9 + [counts[2]] * 16
    assert loop.kv_lengths() == [55 + c for c in seen]
    assert report["layer_averaged"] == [pytest.approx(sum(seen) / 32)]
