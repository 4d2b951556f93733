"""Optional GPT judge: grade MM-Vet answers and review LLaVA-Bench answers through the OpenAI chat API.

Needs OPENAI_API_KEY in the environment (OPENAI_BASE_URL optionally); the key is never printed or
written. Nothing else in llava.eval imports this module, and no test calls the API. The built-in
instructions are this project's own wording, so scores are comparable across our runs but not
identical to the published GPT-4-0314 grades; pass the official prompt with --prompt-file (MM-Vet,
placeholders {question} {answer} {prediction}) or --rule-file (LLaVA-Bench rule.json) to match them.

  python -m llava.eval.gpt_judge mmvet --mmvet-json mm-vet.json --results R.json --out G.json [--runs 1]
  python -m llava.eval.gpt_judge llava-bench --questions Q.jsonl --context C.jsonl --rule-file rule.json \\
      --answer1 gpt4.jsonl --answer2 model.jsonl --out reviews.jsonl
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Sequence

from . import judge_client
from .io_utils import index_by_qid, read_json, read_jsonl, write_json

DEFAULT_URL = judge_client.OPENAI_URL
MMVET_INSTRUCTION = (
    "Grade how correct a model's prediction is against the ground truth, as a number from 0.0 to 1.0 "
    "(1.0 fully correct, 0.0 wrong; partial credit allowed). In the ground truth, <AND> joins parts that "
    "must all appear and <OR> separates acceptable alternatives. Reply with the number only.\n\n"
    "Question: {question}\nGround truth: {answer}\nPrediction: {prediction}\nScore:"
)
REVIEW_SYSTEM = "You are a careful, impartial judge of how well AI assistants answer questions about images."
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def api_key() -> str:
    """The API key from OPENAI_API_KEY; a JudgeError (a RuntimeError) says how to set it."""
    return judge_client.api_key(judge_client.DEFAULT_KEY_ENV)


def chat(messages: list[dict], model: str, max_tokens: int = 512, retries: int = 3, timeout: float = 120) -> str:
    """One chat completion (temperature 0) from OPENAI_BASE_URL (default OpenAI), through `judge_client`."""
    endpoint = judge_client.ChatEndpoint(model=model, retries=retries, timeout=timeout, backoff=1.0)
    return endpoint.chat(messages, max_tokens=max_tokens)


def parse_mmvet_score(text: str) -> float | None:
    """The first number in the reply if it lies in [0, 1], else None."""
    match = NUMBER.search(text)
    value = float(match.group()) if match else None
    return value if value is not None and 0.0 <= value <= 1.0 else None


def parse_review_scores(text: str) -> list[float]:
    """The two scores on the reply's first line ("8 6.5" or "8, 6.5"), or [-1, -1] when unparseable."""
    first = text.strip().split("\n", 1)[0]
    numbers = NUMBER.findall(first.replace(",", " "))
    return [float(numbers[0]), float(numbers[1])] if len(numbers) == 2 else [-1.0, -1.0]


def grade_mmvet(mmvet: dict, results: dict, out: Path, model: str, runs: int, template: str) -> dict:
    """Grade every sample `runs` times, resuming from `out`; writes the grade-file format after each sample."""
    grades = read_json(out) if out.exists() else {}
    for sample, item in mmvet.items():
        if sample not in results:
            raise ValueError(f"sample {sample}: no prediction in the results file")
        entry = grades.setdefault(sample, {"model": [], "content": [], "score": []})
        prompt = (template.replace("{question}", item["question"]).replace("{answer}", item["answer"])
                  .replace("{prediction}", results[sample]))
        while len(entry["score"]) < runs:
            reply, score = "", None
            for _ in range(3):
                reply = chat([{"role": "user", "content": prompt}], model, max_tokens=8)
                score = parse_mmvet_score(reply)
                if score is not None:
                    break
            entry["model"].append(model)
            entry["content"].append(reply)
            entry["score"].append(0.0 if score is None else score)
        write_json(out, grades, indent=4)
    return grades


def review_llava_bench(questions: list[dict], context: dict, rules: dict, answers1: dict, answers2: dict,
                       out: Path, model: str) -> list[dict]:
    """Review each question (Assistant 1 = reference answer, Assistant 2 = model) into LLaVA's review jsonl."""
    reviews = []
    for n, q in enumerate(questions, start=1):
        qid = str(q["question_id"])
        a1, a2 = answers1[qid], answers2[qid]
        category = "llava_bench_" + q["category"]
        rule = rules[category]
        role = rule.get("role", "Assistant")
        caption = context[str(q["image"])]["caption"] if context else ""
        content = (f"[Context]\n{caption}\n\n[Question]\n{q['text']}\n\n"
                   f"[{role} 1]\n{a1['text']}\n\n[End of {role} 1]\n\n[{role} 2]\n{a2['text']}\n\n[End of {role} 2]\n\n"
                   f"[System]\n{rule['prompt']}\n\n")
        reply = chat([{"role": "system", "content": REVIEW_SYSTEM}, {"role": "user", "content": content}], model)
        reviews.append({"id": n, "question_id": q["question_id"], "answer1_id": a1.get("answer_id"),
                        "answer2_id": a2.get("answer_id"), "category": category, "content": reply,
                        "tuple": parse_review_scores(reply)})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps(r) + "\n" for r in reviews), encoding="utf-8")
    return reviews


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    mv = sub.add_parser("mmvet")
    mv.add_argument("--mmvet-json", required=True)
    mv.add_argument("--results", required=True, help="converted answers {v1_<id>: text}")
    mv.add_argument("--runs", type=int, default=1)
    mv.add_argument("--prompt-file", default=None)
    lb = sub.add_parser("llava-bench")
    lb.add_argument("--questions", required=True)
    lb.add_argument("--context", default=None, help="context jsonl with image captions")
    lb.add_argument("--rule-file", required=True, help="rule.json: {llava_bench_<cat>: {role, prompt}}")
    lb.add_argument("--answer1", required=True, help="reference (GPT-4) answers jsonl")
    lb.add_argument("--answer2", required=True, help="model answers jsonl")
    for p in (mv, lb):
        p.add_argument("--out", required=True)
        p.add_argument("--model", default="gpt-4-0613")
    args = parser.parse_args(argv)
    api_key()  # fail before any work when the key is missing
    if args.command == "mmvet":
        template = Path(args.prompt_file).read_text(encoding="utf-8") if args.prompt_file else MMVET_INSTRUCTION
        grades = grade_mmvet(read_json(args.mmvet_json), read_json(args.results), Path(args.out), args.model,
                             args.runs, template)
        print(f"graded {len(grades)} samples into {args.out}")
    else:
        context = {str(c["image"]): c for c in read_jsonl(args.context)} if args.context else {}
        reviews = review_llava_bench(read_jsonl(args.questions), context, read_json(args.rule_file),
                                     index_by_qid(read_jsonl(args.answer1), args.answer1),
                                     index_by_qid(read_jsonl(args.answer2), args.answer2), Path(args.out), args.model)
        print(f"wrote {len(reviews)} reviews to {args.out}")


if __name__ == "__main__":
    from llava.cli_errors import run_main

    run_main(main)
