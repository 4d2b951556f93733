"""Train the tiny LLaMA-style sentencepiece model used by the project's embedded tiny test model.

The corpus is generated here from fixed word lists and a seeded RNG, and the trainer runs on one
thread with LLaMA's settings (BPE, byte fallback, split digits, dummy prefix, identity
normalisation, no whitespace squashing, unk=0 bos=1 eos=2, no pad piece), so the output is the
same bytes on every run with the same sentencepiece version.

    python scripts/build_tiny_tokenizer.py                 # writes llava/assets/tiny_llama_tokenizer.model
    python scripts/build_tiny_tokenizer.py --out /tmp/x.model --vocab-size 1536
"""

from __future__ import annotations

import argparse
import io
import random
from pathlib import Path

import sentencepiece as spm

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "llava" / "assets" / "tiny_llama_tokenizer.model"
DEFAULT_VOCAB_SIZE = 1536
SEED = 20240601
# The sentencepiece version the committed model was built with (other versions may train differently).
BUILT_WITH_SENTENCEPIECE = "0.2.3"

# Texts that LLaVA prompts are built from (template system prompts and role names).
PROMPT_TEXTS = [
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions.",
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language.",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "Please answer yes or no.",
    "Provide a one-sentence caption for the provided image.",
    "Describe the image in detail.",
    "Reference OCR token: none",
    "When the provided information is insufficient, respond with 'Unanswerable'.",
    "USER: ASSISTANT: Human: Assistant: ### [INST] [/INST] <<SYS>> <</SYS>> system user assistant",
    "Received. The visual content will be provided with the following format: image visual content",
]

NOUNS = """dog cat car bus truck bicycle person man woman child boy girl horse cow sheep bird
tree table chair sofa bed window door house building street road sign light phone laptop
computer keyboard book cup bottle plate pizza cake sandwich banana apple orange umbrella bag
kite ball frisbee skateboard surfboard train plane boat clock vase toilet sink oven fridge
television remote mountain river beach sky cloud snow grass field fence bench shirt hat
glasses jacket camera picture image photo letter number word color shape animal food water""".split()
ADJECTIVES = """red blue green yellow black white brown gray orange pink purple large small big
little tall short old young new wooden metal open closed empty full bright dark sunny cloudy
happy busy quiet clean dirty round square striped spotted left right front back top bottom""".split()
VERBS = """sitting standing walking running eating drinking holding riding playing looking
reading writing driving flying sleeping wearing carrying watching using cooking""".split()
PLACES = """on the table|in the kitchen|on the street|in the park|near the window|at the beach|
in the sky|on the grass|next to the car|behind the fence|under the tree|in the room""".split("|")
QUESTIONS = [
    "What is the {adj} {noun} doing?",
    "What color is the {noun}?",
    "How many {noun}s are there in the image?",
    "Is there a {noun} in the image?",
    "Is the {noun} {adj}?",
    "Where is the {noun}?",
    "What is {place}?",
    "Which object is {place}, the {noun} or the {noun2}?",
    "Can you see a {adj} {noun} {place}?",
    "Why is the {noun} {verb}?",
    "Who is {verb} the {noun}?",
    "What is written on the {noun}?",
]
ANSWERS = [
    "Yes", "No", "yes", "no", "Yes.", "No.",
    "The {noun} is {adj}.",
    "There are {num} {noun}s in the image.",
    "The {noun} is {place}.",
    "A {adj} {noun} is {verb} {place}.",
    "It is {verb} {place}, next to a {adj} {noun2}.",
    "{num}",
    "The answer is {letter}.",
    "{letter}",
]
EXTRA_LINES = [
    "A. yes B. no C. maybe D. none of the above",
    "Options: (A) 1 (B) 2 (C) 3 (D) 4",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 20 25 50 100 1000 2024 3.14 1/2 10%",
    "Hello, world! How are you? I'm fine; thanks: (really) [yes] {no} \"quoted\" 'single' - _ + = * & ^ % $ # @ ~ ` | \\ /",
    "The café serves crème brûlée and piña colada; the temperature is 20°C, naïve über résumé.",
    "e.g. i.e. etc. Mr. Dr. St. vs. a.m. p.m. U.S.A. OK? OK! ok...",
]


def _sentence(rng: random.Random, pattern: str) -> str:
    fill = {
        "noun": rng.choice(NOUNS),
        "noun2": rng.choice(NOUNS),
        "adj": rng.choice(ADJECTIVES),
        "verb": rng.choice(VERBS),
        "place": rng.choice(PLACES).strip(),
        "num": str(rng.randint(0, 120)),
        "letter": rng.choice("ABCD"),
    }
    return pattern.format(**fill)


def build_corpus(n_dialogues: int = 3000, seed: int = SEED) -> list[str]:
    """The training lines: prompt texts, word lists, and seeded question/answer dialogues."""
    rng = random.Random(seed)
    lines: list[str] = []
    lines += PROMPT_TEXTS * 5
    lines += EXTRA_LINES * 5
    lines += [" ".join(words) for words in (NOUNS, ADJECTIVES, VERBS)]
    for _ in range(n_dialogues):
        question = _sentence(rng, rng.choice(QUESTIONS))
        answer = _sentence(rng, rng.choice(ANSWERS))
        if rng.random() < 0.3:
            question = question + "\n" + rng.choice(PROMPT_TEXTS[3:6])
        dialogue = f"USER: <image>\n{question} ASSISTANT: {answer}</s>"
        if rng.random() < 0.2:
            dialogue = dialogue.upper() if rng.random() < 0.1 else dialogue.lower()
        # The trainer reads lines: newlines split a dialogue (so "\n" itself stays byte fallback, as in LLaMA).
        lines += [part for part in dialogue.split("\n") if part]
    return lines


def train(vocab_size: int = DEFAULT_VOCAB_SIZE, seed: int = SEED) -> bytes:
    """Train on the generated corpus and return the serialized model."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(build_corpus(seed=seed)),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        split_by_whitespace=True,
        split_by_number=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        max_sentencepiece_length=16,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        input_sentence_size=0,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return model.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the .model file")
    parser.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE)
    args = parser.parse_args()
    data = train(args.vocab_size)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    sp = spm.SentencePieceProcessor(model_proto=data)
    print(f"wrote {args.out} ({len(data)} bytes, {sp.get_piece_size()} pieces)")


if __name__ == "__main__":
    main()
