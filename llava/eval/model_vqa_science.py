"""Answer ScienceQA in LLaVA's `llava_test_CQM-A.json` format (a JSON list of conversations).

As in LLaVA-1.5: the human turn without `<image>` is the question; problems with an image get the
image token; `--single-pred-prompt` appends the letter instruction; the record's `prompt` starts with
"<image>\\n" for image problems (the ScienceQA scorer uses that to report IMG accuracy). Problems
without an image are answered text-only.
"""

from __future__ import annotations

import argparse

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter
from llava.eval.cli_args import add_common_args, check_driver_inputs
from llava.eval.questions import check_file_not_empty

LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."

EPILOG = """example (ScienceQA-IMG test at K=58):
  python -m llava.eval.model_vqa_science --model-path liuhaotian/llava-v1.5-7b \\
      --question-file playground/data/eval/scienceqa/llava_test_CQM-A.json \\
      --image-folder playground/data/eval/scienceqa/images/test \\
      --answers-file playground/data/eval/scienceqa/answers/llava-v1.5-7b_k58.jsonl \\
      --single-pred-prompt --conv-mode vicuna_v1 --temperature 0 --visual-token-num 58
"""


def read_problems(path: str) -> list[dict]:
    """The problems of a ScienceQA conversation file; an empty file or a non-list is an error naming it."""
    from llava.eval.io_utils import read_json

    check_file_not_empty(path)
    problems = read_json(path)
    if not isinstance(problems, list):
        raise ValueError(f"{path}: expected a JSON list of problems (LLaVA's llava_test_CQM-A.json), "
                         f"got a {type(problems).__name__}")
    if not problems:
        raise ValueError(f"{path}: the question file is empty (no problems); check --question-file")
    return problems


def science_items(problems: list[dict], single_pred_prompt: bool, source: str = "question file") -> list:
    """VQAItems from LLaVA's ScienceQA conversation records (a bad record is named by its position)."""
    from llava.eval.runner import VQAItem

    items = []
    for n, line in enumerate(problems):
        try:
            question = line["conversations"][0]["value"].replace("<image>", "").strip()
            qid = line["id"]
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise ValueError(f"{source}: record {n} has no id or no human turn text "
                             f"(expected {{id, conversations: [{{from, value}}, ...]}}; {type(err).__name__}: {err})") from None
        image = line.get("image")
        if image is not None and not isinstance(image, str):
            raise ValueError(f"{source}: record {n} (id {qid}) has a non-string 'image' {image!r}")
        record_prompt = "<image>\n" + question if image else question
        if single_pred_prompt:
            question += "\n" + LETTER_INSTRUCTION
            record_prompt += "\n" + LETTER_INSTRUCTION
        items.append(VQAItem(qid, question, [image] if image else [], prompt_field=record_prompt))
    return items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    add_common_args(parser, conv_mode_default=None)
    parser.add_argument("--single-pred-prompt", action="store_true", help="append the letter instruction")
    parser.add_argument("--answer-prompter", action="store_true", help="(LLaVA flag; not used by LLaVA-1.5)")
    args = parser.parse_args(argv)
    check_driver_inputs(args)
    items = science_items(read_problems(args.question_file), args.single_pred_prompt, args.question_file)
    from llava.eval.runner import run_from_args

    run_from_args(args, items)


if __name__ == "__main__":
    run_main(main)
