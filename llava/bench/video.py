"""The video preset of the efficiency bench: Video-LLaVA shapes, one pass per video, FLOPs per video.

`python -m llava.bench --efficiency --arch video-llava-7b` builds Video-LLaVA-7B's shape with random
weights (Vicuna-7B, vocabulary 32064; two CLIP ViT-L/14 towers at 224 px, 256 patches per frame; the
mlp2x_gelu projector; 8 frames) and runs the efficiency table over per-frame budgets K: the unpruned
row feeds 8 x 257 = 2056 video tokens, FasterVLM keeps 8 x K before the LLM, FastV keeps 8 x K of
the 2056 after its layer. `--visual-token-num` is K per frame, as in `model_video_qa`; the table's
`budget K` column is the video total 8 x K (1536/1024/512/208/104 at the default 192,128,64,26,13).

A pass (`run_video_pass`) calls the model's own pieces: the video tower on every frame ("vision",
with the method's signals), `encode_videos` on those signals (selection and the projector on the kept
tokens, timed together as "select"), then the image bench's splice, prefill and decode
(`stages.generate_greedy`). FLOPs (`video_pass_flops`) follow `flops.CONVENTION` with T frames per
video: the tower and [CLS] scoring on every frame, the projector on the tokens it really projects
(2056 unpruned, 8 x K pruned before the LLM), the LLM layer by layer at the lengths it ran on.
"""

from __future__ import annotations

import torch

from llava.constants import DEFAULT_VIDEO_TOKEN
from llava.pruning import PruningConfig, get_method

from . import flops as F
from .measure import Clock, OtherLoad, PeakMemory
from .models import BenchBatch, QUESTIONS, _materialize

_VICUNA_7B = dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
# LanguageBind's image and video towers in the -hf checkpoint: CLIP ViT-L/14 at 224 px (256 patches).
CLIP_L_224 = dict(image_size=224, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)
VIDEO_ARCHS: dict[str, dict] = {
    # LanguageBind/Video-LLaVA-7B-hf's config.json
    "video-llava-7b": dict(text=_VICUNA_7B, vision=CLIP_L_224, frames=8),
    # the tiny Video-LLaVA's geometry (224 px, 14 px patches, 8 frames; widths 64), for the tests
    "video-llava-tiny": dict(
        text=dict(vocab_size=32064, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=4096, rms_norm_eps=1e-5, bos_token_id=1,
                  eos_token_id=2, pad_token_id=0, tie_word_embeddings=False),
        vision=dict(CLIP_L_224, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                    projection_dim=64), frames=8),
}
DEFAULT_VIDEO_METHODS = ("none", "fastervlm", "fastv")
DEFAULT_FRAME_BUDGETS = (192, 128, 64, 26, 13)  # 8 x K = 1536, 1024, 512, 208, 104: FasterVLM's video table


def is_video_arch(arch: str | None) -> bool:
    return arch in VIDEO_ARCHS


def video_llava_raw(arch: str, llm_layers: int | None = None) -> dict:
    """A config.json of transformers' VideoLlavaForConditionalGeneration layout for `arch` (fewer LLM layers
    with `llm_layers`)."""
    spec = VIDEO_ARCHS[arch]
    text = dict(spec["text"], model_type="llama", initializer_range=0.02)
    if llm_layers is not None:
        if llm_layers < 1:
            raise ValueError(f"--llm-layers must be >= 1, got {llm_layers}")
        text["num_hidden_layers"] = llm_layers
    vision = dict(spec["vision"], model_type="clip_vision_model")
    per_frame = (vision["image_size"] // vision["patch_size"]) ** 2
    return dict(model_type="video_llava", text_config=text, vision_config=vision, vision_feature_layer=-2,
                vision_feature_select_strategy="default", projector_hidden_act="gelu", image_seq_length=per_frame,
                video_seq_length=spec["frames"] * (per_frame + 1), image_token_index=32000, video_token_index=32001)


def build_random_video_model(arch: str, llm_layers: int | None = None, dtype: torch.dtype = torch.float32,
                             device: str = "cpu", seed: int = 0):
    """VideoLlavaForPruning of shape `arch` with random weights (as `models.build_random_model`: parameters on
    meta, then filled once with uniform noise of std 0.02). The image tower shares the video tower's
    CLIP weights (the bench runs videos only; both towers have one shape)."""
    from accelerate import init_empty_weights
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaForCausalLM

    from llava.model.family_llava import hf_fields, llm_config
    from llava.model.family_video_llava import num_frames_of
    from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
    from llava.model.video_llava import VideoLlavaForPruning

    if arch not in VIDEO_ARCHS:
        raise ValueError(f"unknown video --arch {arch!r}; choose from {', '.join(VIDEO_ARCHS)}")
    raw = video_llava_raw(arch, llm_layers)
    fields, llm_type = hf_fields(raw)
    config = llm_config(fields, llm_type)
    vision = CLIPVisionConfig(**{k: v for k, v in raw["vision_config"].items() if k != "model_type"})
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers (rotary, positions) real
        llm = LlamaForCausalLM(config)
        model = VideoLlavaForPruning(llm.config, llm, num_frames=num_frames_of(raw))
        clip = CLIPVisionModel(vision)
    generator = torch.Generator(device=device).manual_seed(seed)
    _materialize(model, dtype, device, 0.02, generator)
    _materialize(clip, dtype, device, 0.02, generator)
    model.to(device)
    clip.to(device)
    name = f"random-{arch}-clip"
    model.attach_vision_tower(CLIPVisionTower(clip, config.mm_vision_select_layer, "patch", name=name))
    model.attach_video_tower(CLIPVisionTower(clip, config.mm_vision_select_layer, "cls_patch", name=name))
    model.set_pruning(None)
    return model.eval()


def video_processor():
    """Video-LLaVA's frame preprocessing (transformers' PIL VideoLlavaImageProcessor), built without files."""
    from transformers import VideoLlavaImageProcessor

    return VideoLlavaImageProcessor()


def sample_clips(n: int, frames: int) -> list[list]:
    """`n` clips of `frames` PIL frames each: the generated moving-shape samples in turn, uniformly sampled."""
    from PIL import Image

    from llava.video_io import sample_frame_indices
    from llava.video_samples import SAMPLES

    clips = []
    for i in range(n):
        drawn = SAMPLES[i % len(SAMPLES)].draw()
        clips.append([Image.fromarray(drawn[j]) for j in sample_frame_indices(len(drawn), frames)])
    return clips


def make_video_batch(tokenizer, processor, batch: int, frames: int, device: str, dtype: torch.dtype,
                     conv_mode: str = "llava_v1", first: int = 0) -> BenchBatch:
    """Questions first..first+batch-1 (cycling over the image bench's QUESTIONS, "image" read as "video") in
    Video-LLaVA's prompt with one `<video>` each; `images` holds the videos [B, T, 3, S, S]."""
    from llava.eval.runner import build_prompt
    from llava.model.video_llava import tokenizer_visual_token
    from llava.video_io import preprocess_frames

    questions = [QUESTIONS[(first + i) % len(QUESTIONS)].replace("image", "video") for i in range(batch)]
    rows = [tokenizer_visual_token(build_prompt(DEFAULT_VIDEO_TOKEN + "\n" + q, conv_mode, with_image=False), tokenizer)
            for q in questions]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    videos = torch.stack([preprocess_frames(c, processor) for c in sample_clips(first + batch, frames)[first:]])
    return BenchBatch(ids.to(device), mask.to(device), videos.to(device=device, dtype=dtype), questions)


@torch.no_grad()
def run_video_pass(model, batch: BenchBatch, k: int | None, method, method_args: dict, new_tokens: int,
                   clock: Clock, memory: PeakMemory | None = None):
    """One pass at K per frame (None: unpruned, every frame's [CLS] and patches) with a registered method."""
    from llava.model.llava_arch import tower_needs
    from llava.model.video_llava import VideoSignals

    from .stages import PassResult, SignalTimer, _cpu_time, generate_greedy

    tower = model.get_video_tower()
    videos = batch.images  # [B, T, 3, S, S]
    prune = method.stage == "pre_llm" and k is not None
    needs = method.needs if prune else frozenset()
    pruning = PruningConfig(method.name, k, method_args=method_args)
    seconds: dict[str, float] = {}
    cpu0 = _cpu_time()
    if memory:
        memory.start()
    load = OtherLoad().start()
    t0 = clock.now()
    timer = SignalTimer(tower, needs if memory is None else frozenset())
    with timer.capturing():
        frames = tower(videos.flatten(0, 1), needs=tower_needs(needs))  # features [B*T, 1 + N, D] (+ signals)
    signals = VideoSignals(frames, videos.shape[1])
    t1 = clock.now()
    if memory:
        memory.mark("vision")
    encoded = model.encode_videos(None, pruning=pruning, signals=signals)  # select + projector: B x [T*K, H]
    t2 = clock.now()
    if memory:
        memory.mark("projector")
    seconds.update(vision=t1 - t0, select=t2 - t1, projector=0.0)
    facts: dict = {}
    out_tokens, length, kv, top = generate_greedy(model, batch, encoded, new_tokens, clock, memory, seconds,
                                                   PruningConfig(method.name, method_args=method_args), facts)
    wall = clock.now() - t0
    seconds["e2e"] = wall
    other = load.stop()
    busy = (_cpu_time() - cpu0) / max(wall * torch.get_num_threads(), 1e-9)
    seconds["scoring"] = timer.time(clock)
    return PassResult(seconds, out_tokens, length, encoded.features[0].shape[0], kv, new_tokens, top_logits=top,
                      memory=memory.finish() if memory else {}, cpu_busy=busy, other_load=other, llm=facts)


def video_pass_flops(d: F.ModelDims, cfg, result, batch: int, frames: int) -> dict[str, int]:
    """FLOPs per stage of one video pass (`flops.CONVENTION`, `frames` frames per video), the LLM charged
    layer by layer at the lengths it ran on (`efficiency.layer_lengths`)."""
    from .efficiency import layer_lengths, with_llm_flops

    facts = result.llm
    lengths = layer_lengths(facts, d.layers)
    method = get_method(cfg.registered)
    pruned_pre = method.stage == "pre_llm" and cfg.k is not None
    out = {
        "vision": F.vision_flops(d, batch * frames),
        "scoring": F.scoring_flops(d, batch * frames, method.needs) if pruned_pre else 0,
        "select": 0,
        "projector": F.projector_flops(d, batch * result.visual_tokens),
        "splice": 0,
    }
    return with_llm_flops(out, d, facts, lengths, batch, result.new_tokens)


# ---- the FLOPs model at full depth, without running anything ------------------------------------------
def video_dims(arch: str) -> F.ModelDims:
    """ModelDims of a video arch at its full depth, from the numbers alone (no model built)."""
    spec = VIDEO_ARCHS[arch]
    t, v = spec["text"], spec["vision"]
    heads = t["num_attention_heads"]
    return F.ModelDims(
        v_hidden=v["hidden_size"], v_intermediate=v["intermediate_size"], v_heads=v["num_attention_heads"],
        v_layers=v["num_hidden_layers"], v_layers_run=v["num_hidden_layers"] - 1,  # select layer -2
        image_size=v["image_size"], patch_size=v["patch_size"],
        projector=((v["hidden_size"], t["hidden_size"]), (t["hidden_size"], t["hidden_size"])),
        hidden=t["hidden_size"], intermediate=t["intermediate_size"], heads=heads,
        kv_heads=t["num_key_value_heads"], head_dim=t["hidden_size"] // heads, layers=t["num_hidden_layers"],
        vocab=t["vocab_size"],
    )


def video_flops_model(d: F.ModelDims, frames: int, text_tokens: int, frame_budgets, fastv_layer: int = 2,
                      new_tokens: int = 1, element_size: int = 2) -> list[dict]:
    """Per budget, one video of `frames` frames and `text_tokens` prompt tokens besides the video, at d's depth:
    TTFT and prefill FLOPs and KV-cache bytes of unpruned, FasterVLM (8 x K before the LLM) and FastV
    (all 2056 up to layer `fastv_layer`, 8 x K after; its probe is the last token's attention row at
    layer `fastv_layer` - 1), with their ratios to unpruned."""
    n = d.num_patches
    full = frames * (n + 1)

    def row(method: str, k: int | None) -> dict:
        kept = full if k is None else frames * min(k, n)
        if method == "fastv":
            lengths = [text_tokens + full] * fastv_layer + [text_tokens + kept] * (d.layers - fastv_layer)
            llm_scoring = F.in_llm_scoring_flops(d, 1, lengths, [fastv_layer - 1], [fastv_layer], slice(-1, None))
            visual_in, needs = full, frozenset()
        else:
            lengths = [text_tokens + kept] * d.layers
            llm_scoring, visual_in = 0, kept
            needs = get_method("fastervlm").needs if k is not None else frozenset()
        prefill = F.prefill_flops_layers(d, 1, lengths) + llm_scoring
        vision = F.vision_flops(d, frames) + F.scoring_flops(d, frames, needs) + F.projector_flops(d, visual_in)
        return {"method": method, "k_per_frame": k, "video_tokens": kept, "prefill": prefill, "ttft": vision + prefill,
                "decode": F.decode_flops_layers(d, 1, lengths, new_tokens),
                "kv_cache_bytes": F.kv_cache_bytes_layers(d, 1, lengths, element_size)}

    rows = [row("none", None)] + [row(m, k) for k in frame_budgets for m in ("fastervlm", "fastv")]
    ref = rows[0]
    for r in rows:
        for key in ("prefill", "ttft", "kv_cache_bytes"):
            r[f"{key}_vs_none"] = r[key] / ref[key]
    return rows


def flops_model_markdown(rows: list[dict], d: F.ModelDims, frames: int, text_tokens: int) -> str:
    """The FLOPs model as a Markdown table (GFLOPs, MB, fractions of the unpruned row)."""
    out = [f"FLOPs model at full depth ({d.layers} LLM layers, {frames} frames of {d.num_patches} patches, "
           f"{text_tokens} text tokens, KV in 2-byte elements): fraction of the unpruned video's cost.", "",
           "| method | K per frame | video tokens | TTFT GFLOPs | TTFT vs none | prefill GFLOPs | prefill vs none "
           "| KV cache MB | KV vs none |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['method']} | {r['k_per_frame'] or '-'} | {r['video_tokens']} | {r['ttft'] / 1e9:.1f} | "
                   f"{100 * r['ttft_vs_none']:.1f}% | {r['prefill'] / 1e9:.1f} | {100 * r['prefill_vs_none']:.1f}% | "
                   f"{r['kv_cache_bytes'] / 1e6:.1f} | {100 * r['kv_cache_bytes_vs_none']:.1f}% |")
    return "\n".join(out)


def relabel(rows: list[dict], frames: int) -> None:
    """Video rows read in video tokens: `k` becomes the video's budget T x K (`k_per_frame` keeps K)."""
    for r in rows:
        k = r.get("k")
        r["k_per_frame"] = k
        if r["method"] != "none" and k is not None and not r.get("scheduled"):
            r["k"] = frames * k
            r["label"] = f"{r['method']} K={frames * k} ({k}/frame)"



def video_run(model, cfg, batch: BenchBatch, new_tokens: int, clock: Clock, memory: PeakMemory | None = None):
    """`efficiency.run_efficiency`'s run_pass for videos: one EffConfig row ('none': unpruned)."""
    from .efficiency import NONE

    k = None if cfg.method == NONE else cfg.k
    return run_video_pass(model, batch, k, get_method(cfg.registered), dict(cfg.args), new_tokens, clock, memory)
