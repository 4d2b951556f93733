"""The drivers' command-line flags and the checks that need no model, all without importing torch.

`add_common_args` declares LLaVA's evaluation flags plus ours; `check_driver_inputs` refuses missing
files and impossible values before the slow imports; `check_answers_paths` refuses an answers path
that is one of the inputs. `llava.eval.runner` does the work once these pass.
"""

from __future__ import annotations

import argparse
import os
from typing import Mapping, Sequence

from llava.cli_errors import add_debug_arg
from llava.cli_help import METHOD_NAMES

DIST_TIMEOUT_MIN = 24 * 60  # equals llava.eval.distributed.DEFAULT_TIMEOUT_MIN (a test checks)
DTYPE_NAMES = {"auto": None, "float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
               "bfloat16": "bfloat16", "bf16": "bfloat16"}  # flag value -> the dtype answers record


def parse_visual_token_num(text: str) -> int | tuple[int, ...]:
    """`--visual-token-num`: one K (an int, as always) or a comma-separated sweep such as "576,144,58,29"."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K or K1,K2,... (positive integers), got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every K must be >= 1, got {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a K is repeated in {text!r}")
    return values[0] if len(values) == 1 else tuple(values)


def parse_visual_token_ratio(text: str) -> float:
    """`--visual-token-ratio`: the kept fraction r in (0, 1] (K_i = round(r x N_i) per image)."""
    if "," in str(text):
        raise argparse.ArgumentTypeError(f"one kept fraction per run, got {text!r}; a sweep takes K lists "
                                         "(--visual-token-num K1,K2,...) or one run per ratio")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a kept fraction in (0, 1], e.g. 0.25, got {text!r}") from None
    if not 0 < value <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"the kept fraction must be in (0, 1] (0.25 keeps a quarter of each image's "
                                         f"tokens), got {text!r}")
    return value


def add_common_args(parser: argparse.ArgumentParser, conv_mode_default: str | None = "llava_v1") -> None:
    """LLaVA's evaluation flags plus ours (budget, method, batching, resume, device), each with help.

    conv_mode_default None (the image drivers): without --conv-mode, a checkpoint with its own
    processor (OneVision, Qwen) is prompted with its chat template, and LLaVA checkpoints with llava_v1
    (`llava.eval.runner.resolve_conv_mode`).
    """
    add = parser.add_argument
    add("--model-path", type=str, default="facebook/opt-350m", help="checkpoint folder (or hub id)")
    add("--model-base", type=str, default=None, help="base LLM for a projector-only or LoRA checkpoint")
    add("--image-folder", type=str, default="", help="folder the questions' image paths are relative to")
    add("--question-file", type=str, default="tables/question.jsonl", help="the benchmark's question file")
    add("--answers-file", type=str, default="answer.jsonl",
        help="answers jsonl, appended to and resumed (a '{k}' in it is replaced by K in a sweep)")
    add("--conv-mode", type=str, default=conv_mode_default,
        help="conversation template (vicuna_v1 for LLaVA-1.5)" + ("" if conv_mode_default else
             "; default: the checkpoint's own chat template for processor families (OneVision, Qwen), "
             "llava_v1 for LLaVA checkpoints"))
    add("--num-chunks", type=int, default=1, help="split the questions into this many contiguous chunks")
    add("--chunk-idx", type=int, default=0, help="the chunk this process answers, in [0, --num-chunks)")
    add("--temperature", type=float, default=0.2, help="sampling temperature; 0 is greedy")
    add("--top_p", type=float, default=None, help="nucleus sampling threshold (with --temperature > 0)")
    add("--num_beams", type=int, default=1, help="beam search width")
    add("--max_new_tokens", type=int, default=128, help="longest answer, in tokens")
    add("--visual-token-num", type=parse_visual_token_num, default=None,
        help="K visual tokens kept per image (None: all 576), or a sweep K1,K2,... answered "
             "in one run, one answers file per K (a '{k}' in --answers-file, else <stem>_k<K>.jsonl)")
    add("--visual-token-ratio", type=parse_visual_token_ratio, default=None, metavar="R",
        help="keep round(R x N_i) of image i's N_i visual tokens (at least 1), R in (0, 1]; "
             "instead of --visual-token-num")
    add("--pruning-method", type=str, default="fastervlm", choices=METHOD_NAMES, metavar="METHOD",
        help=f"how the K tokens are chosen: {', '.join(METHOD_NAMES)}")
    add("--pruning-args", type=str, default=None,
        help="the method's options as key=value,... (e.g. important_ratio=0.5,step=8 for vispruner)")
    add("--batch-size", type=int, default=1, help="questions generated together")
    add("--num-workers", type=int, default=0, help="DataLoader workers for image preprocessing")
    add("--no-resume", action="store_true", help="start the answers file afresh instead of resuming it")
    add("--device", type=str, default="auto", help="cpu, cuda, cuda:N, or auto (cuda when available)")
    add("--torch-dtype", type=str, default="auto", choices=sorted(DTYPE_NAMES),
        help="weights' dtype; auto is float16 on CUDA and float32 on CPU")
    add("--attn-implementation", type=str, default=None, help="eager, sdpa or flash_attention_2 (default: the library's)")
    add("--vision-tower", type=str, default=None, help="local CLIP folder overriding mm_vision_tower")
    add("--vision-attn", type=str, default="sdpa", choices=["sdpa", "eager"],
        help="the CLIP tower's attention: sdpa, or eager (bitwise equal to an eager CLIPVisionModel's "
             "features, to reproduce eager-tower runs exactly)")
    add("--position-mode", type=str, default=None, choices=["keep", "compact"],
        help="positions of the kept tokens in the LLM: keep (the unpruned layout's, text after an image "
             "continues as unpruned) or compact (renumbered 0, 1, 2, ... as if the pruned tokens never "
             "existed); default: the family's (compact for the LLaVA families, keep for Qwen-VL)")
    add("--anyres-mode", type=str, default="faithful", choices=["faithful", "paper"],
        help="LLaVA-NeXT pruning: one budget per image over the unmodified model (faithful), "
             "or FasterVLM's fixed 2x2 grid with K per view (paper)")
    add("--joint-sweep", action="store_true",
        help="a sweep generates all Ks of a batch in one call (batch-size x #K rows): faster, and "
             "equal to per-K generation where batching does not change answers (CPU fp32)")
    add("--truncate-prompts", action="store_true",
        help="cut a prompt longer than the model's context (with a warning naming the question) "
             "instead of stopping with an error")
    add("--no-share-prefix", action="store_true",
        help="prefill every question's whole prompt (by default, questions about one image continue from "
             "one cached prefix of system prompt + visual tokens, for question-independent methods)")
    add("--vision-cache-size", type=int, default=64,
        help="images whose vision-tower outputs are kept in memory (LRU) for reuse by later questions and Ks")
    add("--allow-missing-weights", action="store_true",
        help="load a checkpoint that lacks weights the model needs (they stay randomly initialised)")
    add("--dist-timeout", type=float, default=DIST_TIMEOUT_MIN,
        help="minutes a finished rank waits for the others before rank 0 merges (torchrun runs)")
    add_debug_arg(parser)


def looks_local(path: str) -> bool:
    """A path meant as a local folder (absolute, ./ or ../, ~), as opposed to a hub id like org/name."""
    return str(path).startswith(("/", "./", "../", "~")) or str(path) in (".", "..")


def check_driver_inputs(args: argparse.Namespace) -> None:
    """Refuse missing files and impossible values before anything slow is imported or loaded."""
    if not os.path.isfile(args.question_file):
        raise FileNotFoundError(f"question file {args.question_file} not found (check --question-file)")
    if args.image_folder and not os.path.isdir(args.image_folder):
        raise FileNotFoundError(f"image folder {args.image_folder} not found (check --image-folder)")
    for flag, path in (("--model-path", args.model_path), ("--model-base", args.model_base),
                       ("--vision-tower", args.vision_tower)):
        if path and looks_local(path) and not os.path.exists(os.path.expanduser(path)):
            raise FileNotFoundError(f"{flag} {path} not found")
    positive = {"--batch-size": args.batch_size, "--num-chunks": args.num_chunks, "--num_beams": args.num_beams,
                "--max_new_tokens": args.max_new_tokens}
    for flag, value in positive.items():
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not 0 <= args.chunk_idx < args.num_chunks:
        raise ValueError(f"--chunk-idx {args.chunk_idx} must be in [0, --num-chunks {args.num_chunks})")
    if args.num_workers < 0:
        raise ValueError(f"--num-workers must be >= 0, got {args.num_workers}")
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top_p must be in (0, 1], got {args.top_p}")
    if getattr(args, "visual_token_ratio", None) is not None and args.visual_token_num is not None:
        raise ValueError(f"give --visual-token-num ({args.visual_token_num}) or --visual-token-ratio "
                         f"({args.visual_token_ratio}), not both")


def _same_file(a: str, b: str) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_outputs(outputs: Sequence[tuple[str, str | None]], inputs: Mapping[str, str | None]) -> None:
    """Refuse an output ((flag, path) pairs) that is a folder or the same file as an input ({flag: path}).

    Paths are compared as files (os.path.samefile), so a symlink or another spelling is caught too.
    """
    for out_flag, path in outputs:
        if not path:
            continue
        if os.path.isdir(path):
            raise IsADirectoryError(f"{out_flag} {path} is a folder; give a file path")
        for flag, source in inputs.items():
            if source and _same_file(path, source):
                raise ValueError(f"{out_flag} {path} is the same file as {flag} {source}, which it would "
                                 f"overwrite; choose another {out_flag}")


def check_answers_paths(answers: Sequence[str], inputs: Mapping[str, str | None]) -> None:
    """`check_outputs` for the answers file(s) of a run."""
    check_outputs([("--answers-file", path) for path in answers], inputs)
