"""The LLaMA sentencepiece tokenizer as LLaVA used it, on transformers 5.

LLaVA loads its tokenizer with ``AutoTokenizer.from_pretrained(path, use_fast=False)``, which on
transformers 4.37 is the slow, sentencepiece-driven ``LlamaTokenizer``. On transformers 5 the
``LlamaTokenizer`` name points at a ``tokenizers`` BPE backend whose ids differ in places (the
``legacy`` prefix rules, text after special tokens, decoding). :class:`SlowLlamaTokenizer`
reproduces the 4.37 slow tokenizer's ids and decoded text exactly; :func:`load_tokenizer` is the
entry point that reads a checkpoint folder the way 4.37 did.

What 4.37 does, and this class follows:

* ``legacy`` absent from the config means ``True``. With ``legacy=False`` the sentencepiece model's
  dummy prefix is switched off and the tokenizer adds a ``"▁"`` in front of the whole text itself
  (every ``"▁"`` in the text becomes a space first), then drops that ``"▁"`` again when it stands
  alone before a special token. Text that follows a special token gets no dummy prefix; with
  ``legacy=True`` every piece of text between special tokens gets one.
* Special and added tokens (``"</s>"`` ...) are split out of the text before sentencepiece runs.
* ``add_bos_token`` / ``add_eos_token`` decide the ``<s>`` / ``</s>`` around each sequence.
* Decoding drops the leading ``"▁"`` of the first token, decodes runs of ordinary pieces with
  sentencepiece and joins special tokens in between (with a space before them when ``legacy``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from transformers.tokenization_utils_base import AddedToken
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
from transformers.utils import logging

logger = logging.get_logger(__name__)

SPIECE_UNDERLINE = "▁"
VOCAB_FILE = "tokenizer.model"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
# The named special tokens a LLaMA tokenizer can carry, in the order they are saved.
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
# Config keys that describe the files, not the tokenizer's behaviour.
_FILE_KEYS = ("tokenizer_class", "init_inputs", "tokenizer_file", "vocab_file", "auto_map", "name_or_path")

TINY_TOKENIZER_MODEL = Path(__file__).resolve().parents[1] / "assets" / "tiny_llama_tokenizer.model"


def _special(token: str | AddedToken | dict | None) -> AddedToken | None:
    """A special token as 4.37 builds it: a plain string becomes a non-normalized special AddedToken."""
    if token is None or isinstance(token, AddedToken):
        return token
    if isinstance(token, dict):
        fields = {k: v for k, v in token.items() if k not in ("__type", "special")}
        return AddedToken(**fields, special=True)
    return AddedToken(str(token), normalized=False, special=True)


def _token_fields(token: AddedToken) -> dict[str, Any]:
    """An AddedToken's fields as saved in tokenizer files (without ``special``)."""
    return {
        "content": token.content,
        "lstrip": token.lstrip,
        "normalized": token.normalized,
        "rstrip": token.rstrip,
        "single_word": token.single_word,
    }


class SlowLlamaTokenizer(SentencePieceBackend):
    """LLaMA sentencepiece tokenizer with the ids and decoding of transformers 4.37's slow ``LlamaTokenizer``.

    Build it with :func:`load_tokenizer` (or ``SlowLlamaTokenizer.from_pretrained``). Arguments are
    those of the 4.37 class: ``vocab_file`` (a sentencepiece ``tokenizer.model``), the special
    tokens, ``add_bos_token`` (default True), ``add_eos_token`` (default False), ``legacy`` (None
    means True, as in 4.37), plus the usual ``model_max_length``, ``padding_side`` ...

    Padding: when no pad token is configured, the unk token (``"<unk>"``, id 0) is used as the pad
    token, which is what LLaVA-1.5 checkpoints set explicitly. 4.37 would leave ``pad_token`` unset.
    """

    vocab_files_names = {"vocab_file": VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"

    def __init__(
        self,
        vocab_file: str,
        unk_token: str | AddedToken = "<unk>",
        bos_token: str | AddedToken = "<s>",
        eos_token: str | AddedToken = "</s>",
        pad_token: str | AddedToken | None = None,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        legacy: bool | None = None,
        clean_up_tokenization_spaces: bool = False,
        sp_model_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not os.path.isfile(vocab_file):
            raise FileNotFoundError(f"sentencepiece model {vocab_file!r} not found: pass the path of a tokenizer.model")
        if legacy is None:
            logger.warning_once(
                "tokenizer config has no `legacy` entry: using legacy=True, as transformers 4.37's LlamaTokenizer did"
            )
            legacy = True
        unk_token = _special(unk_token)
        pad_token = _special(pad_token) if pad_token is not None else unk_token
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        # The file's bytes as given: `self.sp_model` may carry a modified proto (no dummy prefix).
        self._model_bytes = Path(vocab_file).read_bytes()
        given = {str(t) for t in (kwargs.get("added_tokens_decoder") or {}).values()}
        super().__init__(
            vocab_file=vocab_file,
            unk_token=unk_token,
            bos_token=_special(bos_token),
            eos_token=_special(eos_token),
            pad_token=pad_token,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            legacy=legacy,
            clean_up_tokenization_spaces=clean_up_tokenization_spaces,
            sp_model_kwargs=sp_model_kwargs or {},
            **kwargs,
        )
        self.legacy = legacy
        self._keep_special_token_flags(given)

    def _keep_special_token_flags(self, given: set[str]) -> None:
        """Register the special tokens' own AddedToken objects (lstrip/rstrip ...), as 4.37 did.

        transformers 5 registers them from their plain strings and drops the flags. Tokens that the
        ``added_tokens_decoder`` argument already describes keep that description.
        """
        named = [self._special_tokens_map.get(name) for name in NAMED_SPECIAL_TOKENS]
        for token in [*named, *self._extra_special_tokens]:
            if isinstance(token, AddedToken) and token.content not in given and token.content in self._added_tokens_encoder:
                token.__setstate__({"special": True, "normalized": token.normalized})
                self._added_tokens_decoder[self._added_tokens_encoder[token.content]] = token
        self._update_trie()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *args: Any, **kwargs: Any):
        """Same as :func:`load_tokenizer` (a folder, or a hub id already in the local cache)."""
        if args:
            raise TypeError("SlowLlamaTokenizer.from_pretrained takes the path and keyword overrides only")
        for key in ("use_fast", "local_files_only", "cache_dir", "trust_remote_code", "revision", "token"):
            kwargs.pop(key, None)
        return load_tokenizer(str(pretrained_model_name_or_path), **kwargs)

    # ---- encoding -------------------------------------------------------------------------------

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Pieces of `text`; with ``legacy=False`` the text gets one leading "▁" (dropped before a special token)."""
        if self.legacy or not text:
            return super().tokenize(text, **kwargs)
        tokens = super().tokenize(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "), **kwargs)
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.all_special_tokens:
            return tokens[1:]
        return tokens

    def _tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Sentencepiece pieces of one span of text that holds no special token.

        Same rule as transformers 5's base class today; kept here so the 4.37 ids never depend on it.
        """
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp_model.encode(text, out_type=str)
        # The model has no dummy prefix here and would drop a leading "▁": encode behind the unk
        # token's text and cut its pieces off again.
        unk = str(self.unk_token)
        n_unk = len(self.sp_model.encode(unk))
        pieces = self.sp_model.encode(unk + text, out_type=str)
        return pieces[n_unk:] if len(pieces) >= n_unk else pieces

    def _wrap(self, ids: list[int], bos: Any, eos: Any) -> list:
        return ([bos] if self.add_bos_token else []) + ids + ([eos] if self.add_eos_token else [])

    def build_inputs_with_special_tokens(self, token_ids_0: list[int], token_ids_1: list[int] | None = None) -> list[int]:
        """``<s> A`` (and ``<s> B`` for a pair), with ``</s>`` after each when ``add_eos_token``."""
        out = self._wrap(token_ids_0, self.bos_token_id, self.eos_token_id)
        if token_ids_1 is not None:
            out += self._wrap(token_ids_1, self.bos_token_id, self.eos_token_id)
        return out

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 where :meth:`build_inputs_with_special_tokens` puts a special token, else 0."""
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        mask = self._wrap([0] * len(token_ids_0), 1, 1)
        if token_ids_1 is not None:
            mask += self._wrap([0] * len(token_ids_1), 1, 1)
        return mask

    def create_token_type_ids_from_sequences(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """0 for the first sequence and its special tokens, 1 for the second."""
        first = [0] * len(self._wrap(token_ids_0, 0, 0))
        return first if token_ids_1 is None else first + [1] * len(self._wrap(token_ids_1, 0, 0))

    # ---- decoding -------------------------------------------------------------------------------

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join pieces: sentencepiece decodes runs of ordinary pieces, special tokens are kept verbatim."""
        if not tokens:
            return ""
        tokens = list(tokens)
        if tokens[0].startswith(SPIECE_UNDERLINE):
            tokens[0] = tokens[0][1:]
        specials = set(self.all_special_tokens)
        out, run, prev_special = "", [], False
        for i, token in enumerate(tokens):
            if token not in specials:
                run.append(token)
                prev_special = False
                continue
            if self.legacy and i != 0 and not prev_special:
                out += " "
            out += self.sp_model.decode(run) + token
            run, prev_special = [], True
        return out + self.sp_model.decode(run)

    def _decode(
        self,
        token_ids: int | list[int],
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
        spaces_between_special_tokens: bool = True,
        **kwargs: Any,
    ) -> str:
        """Decode as 4.37 did: added non-special tokens stand apart from the sentencepiece text."""
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        tokens = self.convert_ids_to_tokens(token_ids, skip_special_tokens=skip_special_tokens)
        specials = set(self.all_special_tokens)
        apart = {t for t in self._added_tokens_encoder if t not in specials}
        apart |= {t for t in self.extra_special_tokens if self.convert_tokens_to_ids(str(t)) >= self.vocab_size}
        apart = {str(t) for t in apart}
        texts: list[str] = []
        run: list[str] = []
        for token in tokens:
            if token not in apart:
                run.append(token)
                continue
            if run:
                text = self.convert_tokens_to_string(run)
                if text:
                    texts.append(text)
                run = []
            texts.append(token)
        if run:
            texts.append(self.convert_tokens_to_string(run))
        text = (" " if spaces_between_special_tokens else "").join(texts)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    # ---- saving ---------------------------------------------------------------------------------

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        """Write the original sentencepiece model (not the in-memory, prefix-less variant)."""
        if not os.path.isdir(save_directory):
            raise NotADirectoryError(f"cannot save the vocabulary: {save_directory!r} is not a folder")
        out = os.path.join(save_directory, (f"{filename_prefix}-" if filename_prefix else "") + VOCAB_FILE)
        Path(out).write_bytes(self._model_bytes)
        return (out,)

    def tokenizer_config(self) -> dict[str, Any]:
        """The ``tokenizer_config.json`` content, in the layout 4.37's ``LlamaTokenizer`` reads."""
        config: dict[str, Any] = {
            "add_bos_token": self.add_bos_token,
            "add_eos_token": self.add_eos_token,
            "added_tokens_decoder": {
                str(idx): {**_token_fields(tok), "special": bool(tok.special)}
                for idx, tok in sorted(self._added_tokens_decoder.items())
            },
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "legacy": self.legacy,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "sp_model_kwargs": dict(self.sp_model_kwargs),
            "tokenizer_class": "LlamaTokenizer",
        }
        for name in ("spaces_between_special_tokens", "use_default_system_prompt", "chat_template"):
            value = self.init_kwargs.get(name, getattr(self, name, None))
            if value is not None:
                config[name] = value
        for name in NAMED_SPECIAL_TOKENS:
            token = self._special_tokens_map.get(name)
            config[name] = None if token is None else {"__type": "AddedToken", **_token_fields(_special(token))}
        extra = [str(t) for t in self.extra_special_tokens]
        if extra:
            config["additional_special_tokens"] = extra
        return config

    def save_pretrained(self, save_directory: str | os.PathLike, filename_prefix: str | None = None, **_: Any) -> tuple[str, ...]:
        """Write tokenizer.model, tokenizer_config.json and special_tokens_map.json.

        Both this class and transformers 4.37's ``LlamaTokenizer`` load the folder back.
        """
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        config = self.tokenizer_config()
        special_map = {
            name: {k: v for k, v in config[name].items() if k != "__type"}
            for name in NAMED_SPECIAL_TOKENS
            if config[name] is not None
        }
        if "additional_special_tokens" in config:
            special_map["additional_special_tokens"] = config["additional_special_tokens"]
        config_path = folder / TOKENIZER_CONFIG_FILE
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        map_path = folder / SPECIAL_TOKENS_MAP_FILE
        map_path.write_text(json.dumps(special_map, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        (vocab_path,) = self.save_vocabulary(str(folder), filename_prefix)
        return str(config_path), str(map_path), vocab_path


# ---- loading ------------------------------------------------------------------------------------


def resolve_tokenizer_dir(path: str) -> Path:
    """A local folder as is; otherwise a hub id looked up in the local Hugging Face cache only."""
    if os.path.isdir(path):
        return Path(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id=path,
                local_files_only=True,
                allow_patterns=[VOCAB_FILE, TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_MAP_FILE, ADDED_TOKENS_FILE],
            )
        )
    except Exception as err:  # not a repo id, or not in the cache
        raise FileNotFoundError(
            f"tokenizer {path!r} is neither a local folder nor a hub repo in the local cache; "
            f"pass a folder, or download it first (huggingface-cli download {path})"
        ) from err


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete the file") from err


def _special_or_str(value: Any) -> Any:
    """A ``{"__type": "AddedToken", ...}`` or plain token dict as an AddedToken; anything else unchanged."""
    if isinstance(value, dict):
        fields = {k: v for k, v in value.items() if k != "__type"}
        return AddedToken(**fields) if "special" in fields else _special(fields)
    return value


def load_tokenizer(path: str, **overrides: Any) -> SlowLlamaTokenizer:
    """Load the tokenizer of a LLaMA-family checkpoint as transformers 4.37's slow ``LlamaTokenizer`` would.

    Reads ``tokenizer.model`` plus, when present, ``tokenizer_config.json``, ``special_tokens_map.json``
    and ``added_tokens.json``. `overrides` take precedence over the files (e.g. ``legacy=False``,
    ``model_max_length=4096``, ``padding_side="left"``).
    """
    folder = resolve_tokenizer_dir(path)
    vocab_file = folder / VOCAB_FILE
    if not vocab_file.is_file():
        raise FileNotFoundError(
            f"no {VOCAB_FILE} in {str(folder)!r}: LLaVA's LLaMA tokenizer needs the sentencepiece model file"
        )
    config_file = folder / TOKENIZER_CONFIG_FILE
    init: dict[str, Any] = _read_json(config_file) if config_file.is_file() else {}
    tokenizer_class = init.get("tokenizer_class")
    if tokenizer_class and "llama" not in tokenizer_class.lower():
        logger.warning(f"{config_file} names tokenizer_class {tokenizer_class!r}; loading it as a LLaMA sentencepiece tokenizer")
    for key in _FILE_KEYS:
        init.pop(key, None)
    init.update(overrides)

    added: dict[int, AddedToken] = {}
    if "added_tokens_decoder" in init:
        # Newer configs carry the added tokens; special_tokens_map.json is then not read (as in 4.37).
        for idx, tok in init["added_tokens_decoder"].items():
            added[int(idx)] = tok if isinstance(tok, AddedToken) else AddedToken(**tok)
    else:
        map_file = folder / SPECIAL_TOKENS_MAP_FILE
        for key, value in (_read_json(map_file) if map_file.is_file() else {}).items():
            if overrides.get(key):
                continue
            if key == "additional_special_tokens" and isinstance(value, list):
                merged = list(init.get("additional_special_tokens") or [])
                merged += [t for t in map(_special_or_str, value) if t not in merged]
                value = merged
            elif isinstance(value, dict):
                value = _special(value)
            init[key] = value
        added_file = folder / ADDED_TOKENS_FILE
        if added_file.is_file():
            named = {str(_special_or_str(init[k])) for k in NAMED_SPECIAL_TOKENS if init.get(k) is not None}
            named |= {str(_special_or_str(t)) for t in init.get("additional_special_tokens") or []}
            for content, idx in _read_json(added_file).items():
                is_special = content in named
                added[int(idx)] = AddedToken(content, lstrip=False, rstrip=False, normalized=not is_special, special=is_special)
    init["added_tokens_decoder"] = added

    by_content = {tok.content: tok for tok in added.values()}
    for key in NAMED_SPECIAL_TOKENS:
        if init.get(key) is not None:  # an absent key keeps the class default
            value = _special_or_str(init[key])
            init[key] = by_content.get(str(value), value)
    if init.get("additional_special_tokens"):
        init["additional_special_tokens"] = [_special_or_str(t) for t in init["additional_special_tokens"]]
    return SlowLlamaTokenizer(vocab_file=str(vocab_file), name_or_path=str(path), **init)


# ---- the tiny test tokenizer ----------------------------------------------------------------------


def tiny_tokenizer_config() -> tuple[dict[str, Any], dict[str, Any]]:
    """``tokenizer_config.json`` and ``special_tokens_map.json`` laid out like the llava-v1.5 checkpoints'."""

    def tok(content: str) -> dict[str, Any]:
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}

    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": {"__type": "AddedToken", **tok("<s>")},
        "clean_up_tokenization_spaces": False,
        "eos_token": {"__type": "AddedToken", **tok("</s>")},
        "legacy": False,
        "model_max_length": 2048,
        "pad_token": "<unk>",
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": {"__type": "AddedToken", **tok("<unk>")},
    }
    special_map = {"bos_token": tok("<s>"), "eos_token": tok("</s>"), "pad_token": "<unk>", "unk_token": tok("<unk>")}
    return config, special_map


def save_tiny_tokenizer(directory: str | os.PathLike) -> Path:
    """Write the tiny LLaMA-style tokenizer (``llava/assets``) into a checkpoint folder; returns the folder.

    Rebuild the model file with ``python scripts/build_tiny_tokenizer.py``.
    """
    if not TINY_TOKENIZER_MODEL.is_file():
        raise FileNotFoundError(
            f"{TINY_TOKENIZER_MODEL} is missing: run `python scripts/build_tiny_tokenizer.py` to build it"
        )
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TINY_TOKENIZER_MODEL, folder / VOCAB_FILE)
    config, special_map = tiny_tokenizer_config()
    (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / SPECIAL_TOKENS_MAP_FILE).write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
    return folder


__all__ = [
    "SlowLlamaTokenizer",
    "load_tokenizer",
    "resolve_tokenizer_dir",
    "save_tiny_tokenizer",
    "tiny_tokenizer_config",
    "TINY_TOKENIZER_MODEL",
]
