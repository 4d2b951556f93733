"""Answer a LLaVA question file (VQAv2, GQA, VizWiz, TextVQA, POPE, MME, SEED) with optional pruning.

    python -m llava.eval.model_vqa_loader --model-path P --question-file Q.jsonl --image-folder IMG \
        --answers-file A.jsonl --conv-mode vicuna_v1 --temperature 0 --visual-token-num 58

Question lines: {question_id, image, text}. Answer lines (LLaVA's format): {question_id, prompt, text,
answer_id, model_id, metadata}; metadata records K, the method and the visual tokens the LLM saw.
"""

from __future__ import annotations

import argparse

from llava.eval.io_utils import read_jsonl
from llava.eval.runner import VQAItem, add_common_args, run_from_args


def items_from_questions(questions: list[dict], source: str = "question file") -> list[VQAItem]:
    """VQAItems from LLaVA question lines; a line without question_id/text raises naming its position."""
    items = []
    for n, q in enumerate(questions, start=1):
        missing = [key for key in ("question_id", "text") if key not in q]
        if missing:
            raise ValueError(f"{source}: line {n} lacks {missing}")
        images = [q["image"]] if q.get("image") else []
        items.append(VQAItem(q["question_id"], q["text"], images))
    return items


def run(args: argparse.Namespace) -> None:
    """Answer the question file described by the parsed common flags."""
    questions = read_jsonl(args.question_file)
    run_from_args(args, items_from_questions(questions, args.question_file))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
