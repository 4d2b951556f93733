"""Answer a LLaVA question file (VQAv2, GQA, VizWiz, TextVQA, POPE, MME, SEED) with optional pruning.

Question lines: {question_id, image, text}. Answer lines (LLaVA's format): {question_id, prompt, text,
answer_id, model_id, metadata}; metadata records K, the method and the visual tokens the LLM saw.
Resuming into an answers file written by another run (model, K, method, its args, conv mode, dtype,
anyres mode) is refused.
"""

from __future__ import annotations

import argparse

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter
from llava.eval.cli_args import add_common_args, check_driver_inputs
from llava.eval.questions import check_question_rows, read_jsonl_rows

EPILOG = """examples:
  # POPE at K=58 (FasterVLM's 90% reduction), greedy, resumable:
  python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-7b \\
      --question-file playground/data/eval/pope/llava_pope_test.jsonl \\
      --image-folder playground/data/eval/pope/val2014 \\
      --answers-file playground/data/eval/pope/answers/llava-v1.5-7b_k58.jsonl \\
      --conv-mode vicuna_v1 --temperature 0 --visual-token-num 58

  # one model load, four budgets, one answers file per K ('{k}' is replaced):
  python -m llava.eval.model_vqa_loader --model-path liuhaotian/llava-v1.5-7b \\
      --question-file Q.jsonl --image-folder IMAGES --answers-file answers/k{k}.jsonl \\
      --conv-mode vicuna_v1 --temperature 0 --visual-token-num 576,144,58,29
"""


def add_question_args(parser: argparse.ArgumentParser) -> None:
    """Flags about the question file's rows."""
    parser.add_argument("--allow-text-only", action="store_true",
                        help="answer rows without an 'image' as text-only questions (otherwise such a row is an "
                             "error: every question of these benchmarks has an image)")


def build_parser(description: str = __doc__, epilog: str = EPILOG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, epilog=epilog, formatter_class=HelpFormatter)
    add_common_args(parser, conv_mode_default=None)
    add_question_args(parser)
    return parser


def items_from_rows(rows: list[tuple[int, dict]]) -> list:
    """VQAItems from checked (line number, question row) pairs."""
    from llava.eval.runner import VQAItem

    return [VQAItem(q["question_id"], q["text"], [q["image"]] if q.get("image") else []) for _, q in rows]


def run(args: argparse.Namespace) -> None:
    """Answer the question file described by the parsed flags (checked before the model is imported)."""
    check_driver_inputs(args)
    rows = read_jsonl_rows(args.question_file)
    check_question_rows(rows, args.question_file, require_image=not args.allow_text_only)
    from llava.eval.runner import run_from_args

    run_from_args(args, items_from_rows(rows))


def main(argv: list[str] | None = None) -> None:
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    run_main(main)
