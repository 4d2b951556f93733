"""FitPrune's recipe search: per-layer removal counts that meet a FLOPs budget on a small calibration set.

    python -m llava.pruning.fitprune_search --model-path ckpt --question-file q.jsonl \
        --image-folder imgs --reduction-ratio 0.5 --output recipe.json

The method (Ye et al., arXiv 2409.10197, "fitting"; official search ywh187/FitPrune,
`LLaVA_1.5/llava/eval/statistical_analysis.py`, `compute_attention_weights`, `fit_model`,
`statistical_analysis`) minimises the divergence of the attention distributions before and after
pruning under a budget:

1. Reference. Each calibration sample runs unpruned; at every layer l the head-max attention map
   gives the image's self-attention mass W_self[l] = sum A[img, img] / n and its cross-attention mass
   W_cross[l] = sum A[text after, img] / n_text.
2. Fit for a threshold alpha. Each sample runs again, layer by layer, on its surviving tokens. At
   layer l, per image token j: self_j = sum_v A[v, j] / n, cross_j = sum_t A[t, j] / n_text. In
   ascending order of each, the most tokens are marked whose removal leaves at least (1 - alpha) of the
   reference mass (W[l] (1 - alpha)); the tokens marked by both leave after layer l. The FLOPs of
   layer l are charged before its removal for q/k/v and attention and after it for o_proj and the MLP
   (image tokens only, as the official accounting). The fit stops at the first layer where, the counts
   so far kept to the end, the mean FLOPs over the samples meet (1 - ratio) of the unpruned FLOPs
   ("reached"); the recipe is the mean count removed per layer (floored) before that layer.
3. Binary search over alpha in [0, 1] to a width of 0.01: reached -> smaller alpha, else larger.
   The smallest reaching alpha's recipe is written (the official script prints the last one tried).

Here each sample runs through the LLM loop (`llava.model.llm_loop`) with a dropper that applies the
threshold rule at every layer; the stop layer is found afterwards from the per-sample counts, which is
the same as the official layer-by-layer pass because a sample's removals never depend on the others'.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from llava.probe import Captured, HeadGeometry

from .fitprune import LayerMaps, Recipe, fitprune_parts, image_and_text, removal_order
from .in_llm import LoopState

TOLERANCE = 0.01  # the official binary search stops when max_alpha - min_alpha <= 0.01


# ---- FLOPs (the official accounting: image tokens only, multiply-accumulates) ----------------------
@dataclass(frozen=True)
class Dims:
    """The LLM widths the FLOPs count reads: hidden d, key/value width, MLP width."""

    hidden: int
    kv: int
    intermediate: int

    @classmethod
    def of(cls, config) -> "Dims":
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(config.hidden_size, kv_heads * head_dim, config.intermediate_size)


def layer_flops(n_in: int, n_out: int, dims: Dims) -> int:
    """One layer: q/k/v projections and attention on n_in tokens, o_proj and the MLP on the n_out kept."""
    d = dims.hidden
    attention = n_in * d * (d + 2 * dims.kv) + 2 * n_in * n_in * d
    rest = n_out * d * d + 3 * n_out * d * dims.intermediate
    return attention + rest


def schedule_flops(num_tokens: int, removed, dims: Dims) -> int:
    """FLOPs of all layers for an image of num_tokens tokens with `removed[l]` leaving after layer l."""
    total, n = 0, num_tokens
    for r in removed:
        total += layer_flops(n, n - r, dims)
        n -= r
    return total


def loop_flops(num_tokens: int, removed, dims: Dims) -> int:
    """The same, as the LLM loop runs it: layer l runs all of itself on the tokens entering it."""
    total, n = 0, num_tokens
    for r in removed:
        total += layer_flops(n, n, dims)
        n -= r
    return total


# ---- the threshold rule -----------------------------------------------------------------------------
def removal_count(values: torch.Tensor, reference: float, alpha: float) -> int:
    """How many of the smallest `values` can go while the rest keep >= (1 - alpha) * reference.

    The official loop: the first i (0..n-1) whose remaining mass after removing the i smallest falls
    below the target gives i - 1 (at least 0); if none does, n - 1 (the official code would reuse a
    stale count there).
    """
    ordered = torch.sort(values.double(), stable=True).values
    before = torch.cat([ordered.new_zeros(1), ordered.cumsum(0)[:-1]])  # [n] mass of the i smallest
    below = torch.nonzero(ordered.sum() - before < reference * (1 - alpha)).flatten()
    if len(below) == 0:
        return len(values) - 1
    return max(int(below[0]) - 1, 0)


class _AllLayers:
    """A dropper that scores every layer but the last and runs `decide` for one image per call."""

    q_rows = None

    def __init__(self, span: tuple[int, int], num_layers: int):
        self.span, self.num_layers = span, num_layers
        self.probe_layers = tuple(range(num_layers - 1))
        self.drop_layers = tuple(range(1, num_layers))
        self.maps = LayerMaps(self.probe_layers)

    def keep(self, layer: int, state: LoopState, captured: dict[int, Captured], geometry: HeadGeometry):
        if state.valid.shape[0] != 1:
            raise ValueError("the FitPrune search runs one calibration sample at a time")
        (attn, origin), = self.maps.of(layer - 1, state, captured, geometry)
        rows = torch.nonzero(state.valid[0]).flatten()
        image, text = image_and_text(origin, [self.span], 0)
        if len(text) == 0:
            raise ValueError("FitPrune's search needs text after the image (the question)")
        self_part, cross_part = fitprune_parts(attn, image, text)
        gone = self.decide(layer - 1, self_part, cross_part / len(text), image)
        take = torch.ones(len(rows), dtype=torch.bool, device=rows.device)
        take[gone] = False
        keep = [rows[take]]
        self.maps.after_drop(layer, state, captured, geometry, keep)
        return keep

    def decide(self, layer: int, self_part, cross_part, image) -> torch.Tensor:
        raise NotImplementedError

    def report(self) -> dict:
        return {}


class ReferenceMass(_AllLayers):
    """The unpruned attention masses per layer (nothing removed): self_mass[l], cross_mass[l]."""

    def __init__(self, span, num_layers):
        super().__init__(span, num_layers)
        self.self_mass: list[float] = []
        self.cross_mass: list[float] = []

    def decide(self, layer, self_part, cross_part, image):
        self.self_mass.append(float(self_part.double().sum()))
        self.cross_mass.append(float(cross_part.double().sum()))
        return image[:0]


class ThresholdRemoval(_AllLayers):
    """The fit at one alpha for one sample: removed[l], the tokens that leave after layer l."""

    def __init__(self, span, num_layers, reference: ReferenceMass, alpha: float):
        super().__init__(span, num_layers)
        self.reference, self.alpha = reference, alpha
        self.removed = [0] * num_layers

    def decide(self, layer, self_part, cross_part, image):
        by_cross = removal_order(cross_part)[:removal_count(cross_part, self.reference.cross_mass[layer], self.alpha)]
        by_self = removal_order(self_part)[:removal_count(self_part, self.reference.self_mass[layer], self.alpha)]
        both = by_cross[torch.isin(by_cross, by_self)]
        self.removed[layer] = len(both)
        return image[both]


# ---- the fit and the binary search -------------------------------------------------------------------
@dataclass
class Sample:
    """One calibration prompt, spliced and unpruned (one row, one image)."""

    question_id: object
    inputs_embeds: torch.Tensor  # [1, T, H]
    attention_mask: torch.Tensor  # [1, T]
    position_ids: torch.Tensor  # [1, T]
    span: tuple[int, int]


def prefill(model, sample: Sample, dropper) -> None:
    from llava.model.llm_loop import LLMLoop

    LLMLoop(model.get_model(), model.lm_head, dropper).prefill(
        sample.inputs_embeds, sample.attention_mask, sample.position_ids)


def fit(model, samples: list[Sample], references: list[ReferenceMass], alpha: float, ratio: float,
        num_tokens: int, progress=None) -> tuple[bool, tuple[int, ...]]:
    """(reached, removed per layer) of the fit at `alpha` for a budget of (1 - ratio) of the unpruned FLOPs."""
    num_layers = model.config.num_hidden_layers
    dims = Dims.of(model.config)
    per_sample = []  # [samples][layers] removed
    for sample, ref in zip(samples, references):
        dropper = ThresholdRemoval(sample.span, num_layers, ref, alpha)
        prefill(model, sample, dropper)
        per_sample.append(dropper.removed)
        if progress is not None:
            progress.update(1)
    return reached_schedule(per_sample, num_tokens, dims, ratio)


def reached_schedule(per_sample: list[list[int]], num_tokens: int, dims: Dims,
                     ratio: float) -> tuple[bool, tuple[int, ...]]:
    """(reached, removed per layer) from each sample's removals at every layer.

    The official fit checks at the start of each layer whether, with the counts so far kept to the end,
    the mean FLOPs over the samples meet (1 - ratio) of the unpruned FLOPs; at the first layer where
    they do it stops, and the recipe is the mean count (floored) of the layers before it.
    """
    num_layers = len(per_sample[0])
    budget = schedule_flops(num_tokens, [0] * num_layers, dims) * (1 - ratio)
    for stop in range(num_layers):
        cut = [r[:stop] + [0] * (num_layers - stop) for r in per_sample]
        mean = sum(schedule_flops(num_tokens, r, dims) for r in cut) / len(cut)
        if mean <= budget:
            return True, tuple(sum(r[layer] for r in cut) // len(cut) for layer in range(num_layers))
    return False, tuple(sum(r[layer] for r in per_sample) // len(per_sample) for layer in range(num_layers))


def search(model, samples: list[Sample], ratio: float, tolerance: float = TOLERANCE,
           progress=None) -> tuple[tuple[int, ...], float]:
    """(removed per layer, alpha) of the smallest reaching alpha the binary search finds."""
    if not 0 <= ratio < 1:
        raise ValueError(f"--reduction-ratio must be in [0, 1), got {ratio}")
    num_layers = model.config.num_hidden_layers
    sizes = {s.span[1] - s.span[0] for s in samples}
    if len(sizes) != 1:
        raise ValueError(f"FitPrune's recipe is for one image size, but the calibration images give {sorted(sizes)} "
                         "tokens (use single-view images of one layout)")
    num_tokens = sizes.pop()
    references = []
    for sample in samples:
        ref = ReferenceMass(sample.span, num_layers)
        prefill(model, sample, ref)
        references.append(ref)
        if progress is not None:
            progress.update(1)
    lo, hi, best = 0.0, 1.0, None
    while hi - lo > tolerance + 1e-6:
        mid = (lo + hi) / 2
        reached, removed = fit(model, samples, references, mid, ratio, num_tokens, progress)
        if reached:
            hi, best = mid, (removed, mid)
        else:
            lo = mid
    if best is None:
        reached, removed = fit(model, samples, references, 1.0, ratio, num_tokens, progress)
        if not reached:
            raise ValueError(f"no FitPrune recipe reaches --reduction-ratio {ratio} on this model (try a smaller one)")
        best = (removed, 1.0)
    return best


def search_steps(num_samples: int, tolerance: float = TOLERANCE) -> int:
    """Prefills the search runs: the reference pass and one pass per bisection step."""
    steps, width = 0, 1.0
    while width > tolerance + 1e-6:
        width /= 2
        steps += 1
    return num_samples * (1 + steps)


# ---- the command ---------------------------------------------------------------------------------------
def load_samples(model, tokenizer, image_processor, question_file: str, image_folder: str, conv_mode: str,
                 limit: int | None) -> list[Sample]:
    """The calibration prompts of a LLaVA question file (question_id, image, text), one image each."""
    from llava.constants import IMAGE_TOKEN_INDEX
    from llava.eval.runner import build_prompt
    from llava.mm_utils import load_image, process_images, tokenizer_image_token
    from llava.pruning import PruningConfig

    path = Path(question_file)
    if not path.is_file():
        raise ValueError(f"question file {path} not found (check --question-file)")
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = lines[:limit] if limit else lines
    if not lines:
        raise ValueError(f"question file {path} holds no questions")
    samples = []
    device = model.get_model().embed_tokens.weight.device
    for q in lines:
        qid = q.get("question_id")
        if not q.get("image"):
            raise ValueError(f"question {qid}: FitPrune calibrates on image questions, but it has no 'image'")
        image_path = Path(image_folder) / q["image"]
        if not image_path.is_file():
            raise ValueError(f"question {qid}: image file {image_path} not found (check --image-folder)")
        image = load_image(str(image_path))
        prompt = build_prompt(q["text"], conv_mode, True, getattr(model.config, "mm_use_im_start_end", False))
        ids = tokenizer_image_token(prompt, tokenizer, IMAGE_TOKEN_INDEX, return_tensors="pt")[None].to(device)
        pixels = process_images([image], image_processor, model.config)
        mm = model.prepare_multimodal_inputs(ids, pixels, None, padding_side="left", pruning=PruningConfig(),
                                             image_sizes=[image.size])
        spans = mm.image_spans[0]
        if len(spans) != 1:
            raise ValueError(f"question {qid}: FitPrune calibrates on one image per prompt, got {len(spans)}")
        samples.append(Sample(qid, mm.inputs_embeds, mm.attention_mask, mm.position_ids, spans[0]))
    return samples


def parse_args(argv=None) -> argparse.Namespace:
    from llava.cli_errors import add_debug_arg
    from llava.cli_help import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="python -m llava.pruning.fitprune_search", formatter_class=HelpFormatter,
        description="FitPrune's offline recipe search: per-layer image-token removal counts that meet a FLOPs "
                    "budget on a small calibration set (binary search over the attention-mass threshold). "
                    "The recipe JSON is what `--pruning-method fitprune --pruning-args recipe=PATH` reads.",
        epilog="example:\n  python -m llava.pruning.fitprune_search --model-path liuhaotian/llava-v1.5-13b \\\n"
               "    --question-file calib.jsonl --image-folder images --reduction-ratio 0.6 --output recipe.json")
    parser.add_argument("--model-path", required=True, help="LLaVA checkpoint folder")
    parser.add_argument("--model-base", default=None, help="base LLM for a LoRA / projector-only checkpoint")
    parser.add_argument("--question-file", required=True, help="LLaVA question jsonl (question_id, image, text)")
    parser.add_argument("--image-folder", required=True, help="folder the questions' image paths are relative to")
    parser.add_argument("--reduction-ratio", type=float, default=0.6,
                        help="FLOPs share to remove (the official search's default 0.6)")
    parser.add_argument("--output", required=True, help="recipe JSON to write")
    parser.add_argument("--conv-mode", default="llava_v1", help="the official search's default")
    parser.add_argument("--num-questions", type=int, default=None, help="use only the first N questions")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="binary-search width on alpha")
    parser.add_argument("--device", default="auto", help="cpu, cuda, mps or auto")
    parser.add_argument("--torch-dtype", default=None, help="e.g. float16 (default: the checkpoint's)")
    add_debug_arg(parser)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    from tqdm import tqdm

    from llava.model.builder import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(args.model_path, args.model_base, device=args.device,
                                                           torch_dtype=args.torch_dtype)
    model.eval()
    samples = load_samples(model, tokenizer, processor, args.question_file, args.image_folder, args.conv_mode,
                           args.num_questions)
    with tqdm(total=search_steps(len(samples), args.tolerance), desc="fitprune search", unit="prefill") as bar:
        removed, alpha = search(model, samples, args.reduction_ratio, args.tolerance, progress=bar)
    dims = Dims.of(model.config)
    num_tokens = samples[0].span[1] - samples[0].span[0]
    full = schedule_flops(num_tokens, [0] * len(removed), dims)
    recipe = Recipe(tuple(removed), num_tokens, args.output, args.reduction_ratio, args.model_path,
                    schedule_flops(num_tokens, removed, dims) / full).check()
    data = recipe.to_json(
        flops_ratio_loop=loop_flops(num_tokens, removed, dims) / full, alpha=alpha,
        calibration={"question_file": args.question_file, "questions": len(samples), "conv_mode": args.conv_mode},
        flops_accounting="official: image tokens only; q/k/v and attention before a layer's removal, "
                         "o_proj and MLP after it")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(data, indent=1) + "\n")
    print(f"fitprune recipe -> {args.output}: kept {data['kept']} (FLOPs ratio {data['flops_ratio']:.3f}, "
          f"alpha {alpha:.4f})")
    return data


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
