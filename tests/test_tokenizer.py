"""SlowLlamaTokenizer against transformers 4.37's slow LlamaTokenizer (the oracle), on the tiny tokenizer.

One oracle subprocess computes everything for the module; the tests compare against it.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch

from llava.conversation import conv_templates
from llava.mm_utils import tokenizer_image_token
from llava.model.tokenizer import (
    TINY_TOKENIZER_MODEL,
    SlowLlamaTokenizer,
    load_tokenizer,
    save_tiny_tokenizer,
    tokenizer_family,
)
from oracle import run_oracle

# Tokenizer settings to compare (legacy true / false / absent, add_bos / add_eos on and off ...).
# Config keys: None removes the key, NULL writes an explicit null; "special_map" edits special_tokens_map.json;
# "tokenizer_json" writes a tokenizer.json next to them (as llava-hf checkpoints have).
NULL = "<null>"
_EOS_STRIPPING = {"content": "</s>", "lstrip": True, "normalized": False, "rstrip": True, "single_word": False}
CONFIGS: dict[str, dict] = {
    "llava": {},  # the tiny checkpoint as written: legacy false, add_bos true, pad <unk>
    "legacy": {"legacy": True},
    "legacy_absent": {"legacy": None},
    "legacy_null": {"legacy": NULL},  # 4.37 reads null as true
    "nobos": {"add_bos_token": False},
    "legacy_nobos_eos": {"legacy": True, "add_bos_token": False, "add_eos_token": True},
    "absent_eos": {"legacy": None, "add_eos_token": True},
    "no_pad": {"pad_token": None, "special_map": {"pad_token": None}},
    "pad_in_map_only": {"pad_token": NULL},  # the llava-v1.5 layout: null in the config, "<unk>" in the map
    "cleanup": {"clean_up_tokenization_spaces": True, "legacy": True},
    "bare": {"files": None},  # tokenizer.model alone
    "eos_strips": {"eos_token": {"__type": "AddedToken", **_EOS_STRIPPING}, "special_map": {"eos_token": _EOS_STRIPPING}},
    "with_tokenizer_json": {"add_bos_token": False, "add_eos_token": True, "tokenizer_json": True},
}
# The tokens llava/model/builder.py `_add_image_tokens` adds for mm_use_im_patch_token / mm_use_im_start_end.
IMAGE_TOKENS = ["<im_patch>", "<im_start>", "<im_end>"]
SAVED_BY_US = ["mine_saved_llava", "mine_saved_legacy_nobos_eos", "mine_saved_eos_strips", "mine_saved_image_tokens"]

STRINGS = [
    "", " ", "  ", "\n", "\n\n", " \n ", "\t", "Hello", " Hello", "  Hello", "Hello ", "Hello  world",
    "hello\nworld", "\nHi", "Hi\n\n", "What is the color of the car?", "Yes", "No", "yes.", "no,",
    "</s>", " </s>", "</s> ", "a</s>b", "a </s> b", "a</s> b", "</s></s>", "<s>", "<s>USER", "<s> USER",
    "<unk>", "x<unk>y", "<s></s><unk>", "The car is red.</s>USER: and?</s>", "ASSISTANT: Yes</s>",
    "12345 678", "3.14", "0", "2024-06-01", "100%", "日本語", "😀 ok", "café naïve", "Ünïcödé ñ",
    "▁", "▁Hello", "a▁b", "▁▁", " ▁ ", "x" * 40, "!!!???...", "(A) 1 (B) 2", "'quoted' \"double\"",
    "[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi [/INST]",
    "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\nHi<|im_end|>",
    "USER: <image>\nWhat is this? ASSISTANT:", "<image>", "<image>\n", "<image><image>", "text <image> text",
    "Answer the question using a single word or phrase.", "Is it ok ? Yes , it is n't . I 'm sure",
    "end </s>  next", "end</s>\n\nnext",
]


def _llava_prompts() -> list[str]:
    """Full prompts from every template, with and without an answer, image first."""
    prompts = []
    for name in ("llava_v1", "vicuna_v1", "plain", "llava_llama_2", "mistral_instruct", "chatml_direct", "llava_v0",
                 "v1_mmtag"):
        conv = conv_templates[name].copy()
        conv.append_message(conv.roles[0], "<image>\nWhat is in the image? Answer in one word.")
        conv.append_message(conv.roles[1], None)
        prompts.append(conv.get_prompt())
        if name != "plain":
            conv.messages[-1][1] = "A dog.\n2 cats."
            conv.append_message(conv.roles[0], "Is it <image> sunny?")
            conv.append_message(conv.roles[1], None)
            prompts.append(conv.get_prompt())
    return prompts


PROMPTS = _llava_prompts()


def _random_ids(n: int, vocab: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    seqs = [[rng.randrange(vocab) for _ in range(rng.randint(1, 30))] for _ in range(n)]
    seqs += [[1, 1434, 2], [1434], [2, 1434, 13], [3 + 0xE6, 3 + 0x97], [1, 1434, 1434, 0, 2, 5]]
    return seqs


def _write_tokenizer_json(path: Path) -> None:
    """A tokenizer.json whose only use to a slow tokenizer is its added tokens (one past the vocabulary)."""
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import BPE

    fast = Tokenizer(BPE(vocab={"<unk>": 0, "<s>": 1, "</s>": 2}, merges=[]))
    fast.add_special_tokens([AddedToken(t, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    fast.add_tokens([AddedToken("<image>", normalized=False, special=True)])
    data = json.loads(fast.to_str())
    data["added_tokens"][-1]["id"] = 1536
    path.write_text(json.dumps(data))


def _write_dirs(root: Path) -> dict[str, str]:
    dirs = {}
    for name, change in CONFIGS.items():
        folder = save_tiny_tokenizer(root / name)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        smap = json.loads((folder / "special_tokens_map.json").read_text())
        for key, value in change.items():
            if key == "files":
                config, smap = None, None
            elif key == "tokenizer_json":
                _write_tokenizer_json(folder / "tokenizer.json")
            elif key == "special_map":
                smap.update(value)
                smap = {k: v for k, v in smap.items() if v is not None}
            elif value is None:
                config.pop(key)
            else:
                config[key] = None if value == NULL else value
        for file, content in (("special_tokens_map.json", smap), ("tokenizer_config.json", config)):
            if content is None:
                (folder / file).unlink()
            else:
                (folder / file).write_text(json.dumps(content))
        dirs[name] = str(folder)
    # Saved by this class, to be read back by 4.37.
    for name in ("llava", "legacy_nobos_eos", "eos_strips", "image_tokens"):
        tok = load_tokenizer(dirs.get(name, dirs["llava"]))
        if name == "image_tokens":
            tok.add_tokens(IMAGE_TOKENS, special_tokens=True)
        out = root / f"mine_saved_{name}"
        tok.save_pretrained(out)
        dirs[f"mine_saved_{name}"] = str(out)
    return dirs


ORACLE_JOB = r"""
import os
from transformers import AutoTokenizer, LlamaTokenizer
from llava.mm_utils import tokenizer_image_token

def load(folder):
    if os.path.exists(os.path.join(folder, "tokenizer_config.json")):
        return AutoTokenizer.from_pretrained(folder, use_fast=False)  # what LLaVA calls
    return LlamaTokenizer.from_pretrained(folder)

def probe(tok):
    rows = []
    for s in PAYLOAD["strings"] + PAYLOAD["prompts"]:
        ids = tok(s).input_ids
        rows.append(dict(ids=ids, tokens=tok.tokenize(s), decoded=tok.decode(ids, skip_special_tokens=True),
                         decoded_raw=tok.decode(ids), no_special=tok(s, add_special_tokens=False).input_ids))
    return dict(
        cls=type(tok).__name__, rows=rows,
        image_ids=[tokenizer_image_token(p, tok) for p in PAYLOAD["strings"] + PAYLOAD["prompts"]],
        random_decoded=tok.batch_decode(PAYLOAD["random_ids"], skip_special_tokens=True),
        random_decoded_raw=[tok.decode(x) for x in PAYLOAD["random_ids"]],
        random_tokens=[tok.convert_ids_to_tokens(x) for x in PAYLOAD["random_ids"]],
        batch=tok(PAYLOAD["strings"][10:16], padding=True).data if tok.pad_token is not None else None,
        pair=tok("What is it?", "A cat.").input_ids,
        attrs=dict(bos=tok.bos_token_id, eos=tok.eos_token_id, unk=tok.unk_token_id, pad=tok.pad_token,
                   pad_id=tok.pad_token_id, legacy=tok.legacy, side=tok.padding_side, max_len=tok.model_max_length,
                   size=len(tok), add_bos=tok.add_bos_token, add_eos=tok.add_eos_token,
                   specials=sorted(tok.all_special_tokens)),
    )

RESULT = {name: probe(load(d)) for name, d in PAYLOAD["dirs"].items()}

# A checkpoint saved by 4.37 itself, with added tokens (plain and special) on top of the vocabulary.
tok = AutoTokenizer.from_pretrained(PAYLOAD["dirs"]["llava"], use_fast=False)
tok.add_tokens(["<im_patch>", "dog cat"])
tok.add_special_tokens({"additional_special_tokens": ["<im_start>", "<im_end>"]})
tok.save_pretrained(PAYLOAD["saved_by_oracle"])
RESULT["saved_by_oracle"] = probe(tok)

# What llava/model/builder.py `_add_image_tokens` does, on the original tokenizer.
tok = AutoTokenizer.from_pretrained(PAYLOAD["dirs"]["llava"], use_fast=False)
RESULT["image_tokens_added"] = [tok.add_tokens(PAYLOAD["image_tokens"], special_tokens=True),
                                tok.add_tokens(PAYLOAD["image_tokens"], special_tokens=True)]
RESULT["image_tokens_at_runtime"] = probe(tok)
"""

EXTRA_STRINGS = ["<im_start><im_patch><im_end>", "a <im_patch> b", "dog cat dog", " <im_start> x", "x<im_end>"]


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Tokenizer folders for every setting, and the inputs to compare on."""
    root = tmp_path_factory.mktemp("tokenizers")
    return dict(
        dirs=_write_dirs(root),
        strings=STRINGS + EXTRA_STRINGS,
        prompts=PROMPTS,
        random_ids=_random_ids(60, 1536),
        saved_by_oracle=str(root / "saved_by_oracle"),
        image_tokens=IMAGE_TOKENS,
    )


@pytest.fixture(scope="module")
def oracle(payload: dict) -> dict:
    """Everything the 4.37 tokenizer says about `payload`, from one oracle run."""
    result = run_oracle(ORACLE_JOB, payload)
    payload["dirs"]["saved_by_oracle"] = payload["saved_by_oracle"]
    return result


def _probe(tok: SlowLlamaTokenizer, payload: dict) -> dict:
    rows = []
    for s in payload["strings"] + payload["prompts"]:
        ids = tok(s).input_ids
        rows.append(dict(ids=ids, tokens=tok.tokenize(s), decoded=tok.decode(ids, skip_special_tokens=True),
                         decoded_raw=tok.decode(ids), no_special=tok(s, add_special_tokens=False).input_ids))
    return dict(
        cls="LlamaTokenizer",
        rows=rows,
        image_ids=[tokenizer_image_token(p, tok) for p in payload["strings"] + payload["prompts"]],
        random_decoded=tok.batch_decode(payload["random_ids"], skip_special_tokens=True),
        random_decoded_raw=[tok.decode(x) for x in payload["random_ids"]],
        random_tokens=[tok.convert_ids_to_tokens(x) for x in payload["random_ids"]],
        batch={k: v for k, v in tok(payload["strings"][10:16], padding=True).items()},
        pair=tok("What is it?", "A cat.").input_ids,
        attrs=dict(bos=tok.bos_token_id, eos=tok.eos_token_id, unk=tok.unk_token_id, pad=tok.pad_token,
                   pad_id=tok.pad_token_id, legacy=tok.legacy, side=tok.padding_side, max_len=tok.model_max_length,
                   size=len(tok), add_bos=tok.add_bos_token, add_eos=tok.add_eos_token,
                   specials=sorted(tok.all_special_tokens)),
    )


def _compare(name: str, want: dict, got: dict, strings: list[str]) -> None:
    for s, w, g in zip(strings, want["rows"], got["rows"]):
        for key in w:
            assert g[key] == w[key], f"[{name}] {key} of {s!r}: oracle {w[key]!r}, ours {g[key]!r}"
        # LLaVA reads answers as decode(..., skip_special_tokens=True).strip()
        assert g["decoded"].strip() == w["decoded"].strip()
    for s, w, g in zip(strings, want["image_ids"], got["image_ids"]):
        assert g == w, f"[{name}] tokenizer_image_token({s!r})"
    for key in ("random_decoded", "random_decoded_raw", "random_tokens", "batch", "pair", "cls"):
        if want[key] is not None:  # 4.37 cannot pad without a pad token
            assert got[key] == want[key], f"[{name}] {key}"
    want_attrs, got_attrs = dict(want["attrs"]), dict(got["attrs"])
    if want_attrs["pad"] is None:  # documented difference: we pad with unk when no pad token is configured
        assert (got_attrs.pop("pad"), got_attrs.pop("pad_id")) == ("<unk>", got_attrs["unk"])
        want_attrs.pop("pad"), want_attrs.pop("pad_id")
    assert got_attrs == want_attrs, name


@pytest.mark.parametrize("name", list(CONFIGS) + SAVED_BY_US + ["saved_by_oracle"])
def test_matches_transformers_4_37(payload: dict, oracle: dict, name: str) -> None:
    result = oracle
    tok = load_tokenizer(payload["dirs"][name])
    strings = payload["strings"] + payload["prompts"]
    _compare(name, result[name], _probe(tok, payload), strings)


def test_tokens_added_at_runtime_match(payload: dict, oracle: dict) -> None:
    result = oracle
    tok = load_tokenizer(payload["dirs"]["llava"])
    assert tok.add_tokens(["<im_patch>", "dog cat"]) == 2
    tok.add_special_tokens({"additional_special_tokens": ["<im_start>", "<im_end>"]})
    assert len(tok) == 1540
    _compare("added_at_runtime", result["saved_by_oracle"], _probe(tok, payload), payload["strings"] + payload["prompts"])


def test_string_coverage() -> None:
    assert len(STRINGS) >= 40 and len(PROMPTS) >= 10


def test_legacy_false_rules(payload: dict) -> None:
    tok = load_tokenizer(payload["dirs"]["llava"])
    assert tok.legacy is False and tok.add_bos_token is True
    assert tok.tokenize("</s>") == ["</s>"]  # the lone "▁" before a special token is dropped
    assert tok.tokenize(" Hello")[0] == "▁"  # a leading space is kept as its own piece
    after = tok.tokenize("a</s>b")
    assert after[-1] == "b" and not after[-1].startswith("▁")  # no dummy prefix after a special token


def test_legacy_true_prefixes_text_after_specials(payload: dict) -> None:
    tok = load_tokenizer(payload["dirs"]["legacy"])
    assert tok.tokenize("a</s>b")[-1].startswith("▁")


def test_llava_checkpoint_attributes(payload: dict) -> None:
    tok = load_tokenizer(payload["dirs"]["llava"])
    assert (tok.pad_token, tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == ("<unk>", 0, 0, 1, 2)
    assert tok.padding_side == "right" and tok.model_max_length == 2048
    assert len(tok) == tok.vocab_size == 1536
    batch = tok(["Hi", "What is it?"], padding=True, return_tensors="pt")
    assert batch.input_ids.dtype == torch.long and batch.input_ids[0, -1].item() == 0
    assert tok.convert_ids_to_tokens(2) == "</s>"
    assert tok.encode("Yes") == tok("Yes").input_ids
    ids = tok("The car is red.").input_ids + [tok.eos_token_id]
    assert tok.batch_decode(torch.tensor([ids]), skip_special_tokens=True)[0].strip() == "The car is red."


def test_overrides_and_copies(payload: dict) -> None:
    tok = load_tokenizer(payload["dirs"]["llava"], padding_side="left", model_max_length=4096, legacy=True)
    assert (tok.padding_side, tok.model_max_length, tok.legacy) == ("left", 4096, True)
    assert tok.tokenize("a</s>b") == load_tokenizer(payload["dirs"]["legacy"]).tokenize("a</s>b")
    clone = copy.deepcopy(load_tokenizer(payload["dirs"]["llava"]))
    assert clone("a</s> b").input_ids == load_tokenizer(payload["dirs"]["llava"])("a</s> b").input_ids
    same = SlowLlamaTokenizer.from_pretrained(payload["dirs"]["llava"])
    assert same(" Hello").input_ids == load_tokenizer(payload["dirs"]["llava"])(" Hello").input_ids


def test_saved_files(tmp_path: Path) -> None:
    folder = save_tiny_tokenizer(tmp_path / "ckpt")
    assert (folder / "tokenizer.model").read_bytes() == TINY_TOKENIZER_MODEL.read_bytes()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["legacy"] is False and config["add_bos_token"] is True and config["pad_token"] == "<unk>"
    assert config["tokenizer_class"] == "LlamaTokenizer" and config["model_max_length"] == 2048
    tok = load_tokenizer(str(folder), legacy=False)
    out = tok.save_pretrained(tmp_path / "resaved")
    assert {Path(p).name for p in out} == {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"}
    # The original model file is written back, not the in-memory variant without the dummy prefix.
    assert (tmp_path / "resaved" / "tokenizer.model").read_bytes() == TINY_TOKENIZER_MODEL.read_bytes()
    assert TINY_TOKENIZER_MODEL.stat().st_size < 100_000


def test_tiny_tokenizer_build_is_deterministic() -> None:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "build_tiny_tokenizer.py"
    spec = importlib.util.spec_from_file_location("build_tiny_tokenizer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = module.train()
    assert data == module.train()
    import sentencepiece

    if sentencepiece.__version__ == module.BUILT_WITH_SENTENCEPIECE:
        assert data == TINY_TOKENIZER_MODEL.read_bytes(), "rebuild: python scripts/build_tiny_tokenizer.py"


def test_errors_name_the_item(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError, match="someone/not-cached"):
        load_tokenizer("someone/not-cached")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        load_tokenizer(str(tmp_path / "empty"))


def test_hub_id_resolves_through_local_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    commit = "0" * 40
    save_tiny_tokenizer(cache / "models--org--tiny-llava" / "snapshots" / commit)
    (cache / "models--org--tiny-llava" / "refs").mkdir()
    (cache / "models--org--tiny-llava" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    tok = load_tokenizer("org/tiny-llava")
    assert tok("Hi").input_ids[0] == 1 and tok.legacy is False


def test_image_tokens_added_like_the_builder(payload: dict, oracle: dict) -> None:
    tok = load_tokenizer(payload["dirs"]["llava"])
    added = [tok.add_tokens(IMAGE_TOKENS, special_tokens=True), tok.add_tokens(IMAGE_TOKENS, special_tokens=True)]
    assert added == oracle["image_tokens_added"] == [3, 0]
    assert len(tok) == 1539 and tok.convert_tokens_to_ids(IMAGE_TOKENS) == [1536, 1537, 1538]
    strings = payload["strings"] + payload["prompts"]
    _compare("image_tokens", oracle["image_tokens_at_runtime"], _probe(tok, payload), strings)


ROUND_TRIP = ["llava", "legacy_nobos_eos", "eos_strips", "no_pad", "with_tokenizer_json", "image_tokens"]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_save_load_round_trip(payload: dict, tmp_path: Path, name: str) -> None:
    """save_pretrained + from_pretrained (both inherited) give back the same tokenizer, ids and all."""
    tok = load_tokenizer(payload["dirs"]["llava" if name == "image_tokens" else name])
    if name == "image_tokens":
        tok.add_tokens(IMAGE_TOKENS, special_tokens=True)
    written = tok.save_pretrained(tmp_path)
    assert all(Path(f).is_file() for f in written)
    want = _probe(tok, payload)
    for again in (SlowLlamaTokenizer.from_pretrained(tmp_path), load_tokenizer(tmp_path)):
        assert type(again) is SlowLlamaTokenizer
        assert _probe(again, payload) == want
        assert again.added_tokens_decoder == tok.added_tokens_decoder


def _qwen2_like_tokenizer(folder: Path):
    """A tiny byte-level BPE with Qwen2's pre-tokenizer, saved as a Qwen2Tokenizer checkpoint would be."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    bpe.train_from_iterator(STRINGS + PROMPTS, trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    ).save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "Qwen2Tokenizer"}))
    return bpe


def test_other_families_load_through_auto_tokenizer(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    bpe = _qwen2_like_tokenizer(tmp_path)
    assert tokenizer_family(tmp_path) == "auto"
    tok = load_tokenizer(tmp_path)
    assert type(tok).__name__ == "Qwen2Tokenizer" and not isinstance(tok, SlowLlamaTokenizer)
    assert type(load_tokenizer(tmp_path, family="auto")) is type(AutoTokenizer.from_pretrained(tmp_path)) is type(tok)
    texts = STRINGS + PROMPTS
    want = [bpe.encode(t).ids for t in texts]  # the tokenizers object itself is the reference
    assert [tok(t).input_ids for t in texts] == want
    assert [tok.decode(ids) for ids in want] == [bpe.decode(ids, skip_special_tokens=False) for ids in want]
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"]) == [1, 2, 0]
    prompt = "<|im_start|>user\n<image>\nWhat is it?<|im_end|>"
    want = bpe.encode("<|im_start|>user\n").ids + [-200] + bpe.encode("\nWhat is it?<|im_end|>").ids
    assert tokenizer_image_token(prompt, tok) == want


def test_family_detection_and_choice(payload: dict, tmp_path: Path) -> None:
    assert tokenizer_family(payload["dirs"]["llava"]) == tokenizer_family(payload["dirs"]["bare"]) == "llama"
    assert tokenizer_family(payload["dirs"]["with_tokenizer_json"]) == "llama"
    assert type(load_tokenizer(payload["dirs"]["llava"], family="llama")) is SlowLlamaTokenizer
    gemma = save_tiny_tokenizer(tmp_path / "gemma")  # a sentencepiece model that is not LLaMA's tokenizer class
    config = json.loads((gemma / "tokenizer_config.json").read_text())
    (gemma / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GemmaTokenizer"}))
    assert tokenizer_family(gemma) == "auto"
    (gemma / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "LLaMATokenizer"}))
    assert tokenizer_family(gemma) == "llama"  # the spelling of early LLaMA conversions
    with pytest.raises(ValueError, match="unknown tokenizer family 'qwen9'"):
        load_tokenizer(payload["dirs"]["llava"], family="qwen9")
