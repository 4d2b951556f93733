"""Answer open-ended question files (MM-Vet, LLaVA-Bench): `{question_id, image, text}` lines.

Same as `model_vqa_loader` except that long answers are allowed (max_new_tokens 1024, as in LLaVA).
"""

from __future__ import annotations

from llava.cli_errors import run_main
from llava.eval import model_vqa_loader

EPILOG = """example (MM-Vet, all visual tokens, greedy):
  python -m llava.eval.model_vqa --model-path liuhaotian/llava-v1.5-7b \\
      --question-file playground/data/eval/mm-vet/llava-mm-vet.jsonl \\
      --image-folder playground/data/eval/mm-vet/images \\
      --answers-file playground/data/eval/mm-vet/answers/llava-v1.5-7b.jsonl \\
      --conv-mode vicuna_v1 --temperature 0
"""


def main(argv: list[str] | None = None) -> None:
    parser = model_vqa_loader.build_parser(__doc__, EPILOG)
    parser.set_defaults(max_new_tokens=1024)
    model_vqa_loader.run(parser.parse_args(argv))


if __name__ == "__main__":
    run_main(main)
