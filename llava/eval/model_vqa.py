"""Answer open-ended question files (MM-Vet, LLaVA-Bench): `{question_id, image, text}` lines.

    python -m llava.eval.model_vqa --question-file llava-mm-vet.jsonl --image-folder mm-vet/images \
        --answers-file A.jsonl --conv-mode vicuna_v1 --temperature 0

Same as `model_vqa_loader` except that long answers are allowed (max_new_tokens 1024, as in LLaVA).
"""

from __future__ import annotations

import argparse

from llava.eval import model_vqa_loader
from llava.eval.runner import add_common_args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    parser.set_defaults(max_new_tokens=1024)
    args = parser.parse_args(argv)
    model_vqa_loader.run(args)


if __name__ == "__main__":
    main()
