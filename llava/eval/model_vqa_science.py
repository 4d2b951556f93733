"""Answer ScienceQA in LLaVA's `llava_test_CQM-A.json` format (a JSON list of conversations).

    python -m llava.eval.model_vqa_science --question-file llava_test_CQM-A.json \
        --image-folder scienceqa/images/test --answers-file A.jsonl --single-pred-prompt \
        --conv-mode vicuna_v1 --temperature 0 --visual-token-num 58

As in LLaVA-1.5: the human turn without `<image>` is the question; problems with an image get the
image token; `--single-pred-prompt` appends the letter instruction; the record's `prompt` starts with
"<image>\\n" for image problems (the ScienceQA scorer uses that to report IMG accuracy).
"""

from __future__ import annotations

import argparse
import json

from llava.eval.runner import VQAItem, add_common_args, run_from_args

LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def science_items(problems: list[dict], single_pred_prompt: bool, source: str = "question file") -> list[VQAItem]:
    """VQAItems from LLaVA's ScienceQA conversation records."""
    items = []
    for n, line in enumerate(problems):
        try:
            question = line["conversations"][0]["value"].replace("<image>", "").strip()
            qid = line["id"]
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"{source}: record {n} lacks id/conversations ({err})") from None
        record_prompt = "<image>\n" + question if line.get("image") else question
        if single_pred_prompt:
            question += "\n" + LETTER_INSTRUCTION
            record_prompt += "\n" + LETTER_INSTRUCTION
        images = [line["image"]] if line.get("image") else []
        items.append(VQAItem(qid, question, images, prompt_field=record_prompt))
    return items


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.add_argument("--single-pred-prompt", action="store_true")
    parser.add_argument("--answer-prompter", action="store_true", help="(LLaVA flag; not used by LLaVA-1.5)")
    args = parser.parse_args(argv)

    with open(args.question_file, encoding="utf-8") as f:
        problems = json.load(f)
    run_from_args(args, science_items(problems, args.single_pred_prompt, args.question_file))


if __name__ == "__main__":
    main()
