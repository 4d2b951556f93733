"""Answer MMBench / MMBench-CN from its TSV (base64 images, options A-D, optional hint).

As in LLaVA-1.5: the prompt is hint (if any) + question + "A. ..." lines; options stop at the first
missing one; `--single-pred-prompt` appends the letter instruction (English or Chinese); the record's
`prompt` holds the text without that instruction. `--all-rounds` also asks every rotation of the
options (round_id 1, 2, ...); LLaVA-1.5's published runs use the TSV's own circular copies instead.
"""

from __future__ import annotations

import argparse
import base64
import math
from functools import partial
from typing import TYPE_CHECKING

from llava.cli_errors import run_main
from llava.cli_help import HelpFormatter
from llava.eval.cli_args import add_common_args, check_driver_inputs
from llava.eval.questions import check_file_not_empty

if TYPE_CHECKING:
    from PIL import Image

EPILOG = """example (MMBench dev, English, K=58):
  python -m llava.eval.model_vqa_mmbench --model-path liuhaotian/llava-v1.5-7b \\
      --question-file playground/data/eval/mmbench/mmbench_dev_20230712.tsv \\
      --answers-file playground/data/eval/mmbench/answers/llava-v1.5-7b_k58.jsonl \\
      --single-pred-prompt --lang en --conv-mode vicuna_v1 --temperature 0 --visual-token-num 58
"""

OPTION_LETTERS = ["A", "B", "C", "D"]
LETTER_INSTRUCTION = {
    "en": "Answer with the option's letter from the given choices directly.",
    "cn": "请直接回答选项字母。",
}


def is_missing(value) -> bool:
    """LLaVA's notion of an absent cell: None, NaN, or the strings 'nan'/'none' (any case)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.lower() in ("nan", "none")


def row_options(row: dict) -> list[str]:
    """Option texts A, B, ... up to the first missing one."""
    options = []
    for letter in OPTION_LETTERS:
        value = row.get(letter)
        if is_missing(value):
            break
        options.append(value)
    return options


def _decode(b64: str) -> Image.Image:
    from llava.image_io import decode_image

    return decode_image(base64.b64decode(b64), "(base64 in the TSV)")


def mmbench_items(rows: list[dict], lang: str, single_pred_prompt: bool, all_rounds: bool) -> list:
    """VQAItems for every row (and every option rotation with all_rounds)."""
    from llava.eval.runner import VQAItem

    if lang not in LETTER_INSTRUCTION:
        raise ValueError(f"--lang must be one of {sorted(LETTER_INSTRUCTION)}, not {lang!r}")
    items = []
    for row in rows:
        idx = row["index"]
        if is_missing(row.get("image")):
            raise ValueError(f"MMBench row {idx}: no base64 image")
        if is_missing(row.get("question")) or not isinstance(row["question"], str):
            raise ValueError(f"MMBench row {idx}: no question text")
        options = row_options(row)
        letters = OPTION_LETTERS[: len(options)]
        for round_id in range(len(options) if all_rounds else 1):
            question = row["question"]
            if not is_missing(row.get("hint")):
                question = f"{row['hint']}\n{question}"
            for letter, option in zip(OPTION_LETTERS, options):  # prompts always read A, B, C...
                question += f"\n{letter}. {option}"
            asked = question + "\n" + LETTER_INSTRUCTION[lang] if single_pred_prompt else question
            # ...while option_char records which original letter each position now holds.
            extra = {"round_id": round_id, "options": list(options), "option_char": list(letters)}
            items.append(VQAItem(idx, asked, [partial(_decode, row["image"])], prompt_field=question, extra=extra))
            options, letters = options[1:] + options[:1], letters[1:] + letters[:1]
    return items


def read_mmbench_tsv(path: str) -> list[dict]:
    """The TSV's rows as dicts (pandas, with 'NA'-like strings kept as text)."""
    import pandas as pd

    check_file_not_empty(path)
    frame = pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""], dtype={"index": object})
    missing = {"index", "question", "image", "A", "B"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not an MMBench TSV, missing columns {sorted(missing)}")
    rows = frame.to_dict(orient="records")
    if not rows:
        raise ValueError(f"{path}: the question file is empty (a header but no rows); check --question-file")
    for row in rows:
        row["index"] = int(row["index"]) if str(row["index"]).isdigit() else row["index"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    add_common_args(parser, conv_mode_default=None)
    parser.add_argument("--single-pred-prompt", action="store_true", help="append the letter instruction")
    parser.add_argument("--all-rounds", action="store_true", help="also ask every rotation of the options")
    parser.add_argument("--lang", type=str, default="en", choices=sorted(LETTER_INSTRUCTION),
                        help="language of the letter instruction")
    args = parser.parse_args(argv)
    check_driver_inputs(args)
    rows = read_mmbench_tsv(args.question_file)
    items = mmbench_items(rows, args.lang, args.single_pred_prompt, args.all_rounds)
    from llava.eval.runner import run_from_args

    run_from_args(args, items, extra_metadata={"lang": args.lang})


if __name__ == "__main__":
    run_main(main)
