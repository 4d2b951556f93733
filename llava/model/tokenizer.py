"""Load a checkpoint's tokenizer: LLaMA sentencepiece checkpoints get the ids of transformers 4.37's slow tokenizer.

LLaVA (on transformers 4.37) loads LLaMA/Vicuna tokenizers with ``use_fast=False``: the slow,
sentencepiece-driven ``LlamaTokenizer``. On transformers 5 that name is a ``tokenizers`` BPE, and the
remaining sentencepiece base class, ``SentencePieceBackend``, differs from the 4.37 class in:

* ``legacy=False``: 4.37 puts one ``"▁"`` before the whole text (every ``"▁"`` in it becomes a space)
  and drops it again when it stands alone before a special token; the base class does neither.
  ``legacy: null`` in a config means ``True`` in 4.37 but drops the dummy prefix in the base class.
* ``add_bos_token`` / ``add_eos_token`` put ``<s>`` / ``</s>`` around each sequence of a pair; the
  base class adds no special tokens, and its save and its load next to a ``tokenizer.json`` drop both flags.
* Decoding: 4.37 decodes runs of ordinary pieces with sentencepiece, joins special tokens in between
  (a space before them when ``legacy``) and keeps added non-special tokens apart with spaces.
* Special tokens keep their own ``lstrip`` / ``rstrip`` flags; the base class re-registers them from strings.

:class:`SlowLlamaTokenizer` overrides exactly those and inherits everything else (loading,
saving, ``add_tokens``, padding). :func:`load_tokenizer` is the one entry point for every family:
other tokenizers (Qwen2 ...) load through ``AutoTokenizer``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.tokenization_utils_sentencepiece import SentencePieceBackend
from transformers.utils import logging

logger = logging.get_logger(__name__)

SPIECE_UNDERLINE = "▁"
# `tokenizer_class` values (lower case; early conversions wrote "LLaMATokenizer") of the checkpoints that
# LLaVA tokenized with the slow sentencepiece LlamaTokenizer.
LLAMA_TOKENIZER_CLASSES = ("llamatokenizer", "llamatokenizerfast")
TINY_TOKENIZER_MODEL = Path(__file__).resolve().parents[1] / "assets" / "tiny_llama_tokenizer.model"


class SlowLlamaTokenizer(SentencePieceBackend):
    """LLaMA sentencepiece tokenizer with the ids, decoding and files of transformers 4.37's slow ``LlamaTokenizer``.

    Arguments are those of the 4.37 class (``vocab_file``, special tokens, ``add_bos_token``,
    ``add_eos_token``, ``legacy``, ...). One deliberate difference: without a configured pad
    token, the unk token pads (as LLaVA-1.5 checkpoints set explicitly); 4.37 left it unset.
    Load it with :func:`load_tokenizer`, which never downloads.
    """

    padding_side = "right"

    def __init__(
        self,
        vocab_file: str,
        unk_token: Any = "<unk>",
        bos_token: Any = "<s>",
        eos_token: Any = "</s>",
        pad_token: Any = None,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        legacy: bool | None = None,
        **kwargs: Any,
    ) -> None:
        if legacy is None:
            logger.warning_once("tokenizer config has no `legacy` value: using legacy=True, as transformers 4.37 did")
            legacy = True
        self.add_bos_token, self.add_eos_token = add_bos_token, add_eos_token
        described = {str(t) for t in (kwargs.get("added_tokens_decoder") or {}).values()}
        super().__init__(
            vocab_file=vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
            pad_token=unk_token if pad_token is None else pad_token, add_bos_token=add_bos_token,
            add_eos_token=add_eos_token, legacy=legacy, **kwargs,
        )
        # Register the special tokens' own AddedToken objects (with their strip flags) unless the
        # config's added_tokens_decoder already describes them.
        for token in [*self._special_tokens_map.values(), *self._extra_special_tokens]:
            if not isinstance(token, str) and token is not None and str(token) not in described:
                token.__setstate__({"special": True, "normalized": token.normalized})
                self._added_tokens_decoder[self._added_tokens_encoder[str(token)]] = token
        self._update_trie()

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Pieces of `text`; with ``legacy=False`` the text gets one leading "▁" (dropped before a special token)."""
        if self.legacy or not text:
            return super().tokenize(text, **kwargs)
        tokens = super().tokenize(SPIECE_UNDERLINE + text.replace(SPIECE_UNDERLINE, " "), **kwargs)
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.all_special_tokens:
            return tokens[1:]
        return tokens

    def _wrap(self, ids: list[int], bos: int, eos: int) -> list[int]:
        return [bos] * self.add_bos_token + ids + [eos] * self.add_eos_token

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """``<s> A`` (and ``<s> B`` for a pair), with ``</s>`` after each when ``add_eos_token``."""
        second = [] if token_ids_1 is None else self._wrap(token_ids_1, self.bos_token_id, self.eos_token_id)
        return self._wrap(token_ids_0, self.bos_token_id, self.eos_token_id) + second

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 where :meth:`build_inputs_with_special_tokens` puts a special token, else 0."""
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens=True)
        second = [] if token_ids_1 is None else self._wrap([0] * len(token_ids_1), 1, 1)
        return self._wrap([0] * len(token_ids_0), 1, 1) + second

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Sentencepiece decodes runs of ordinary pieces; special tokens are joined in verbatim."""
        tokens = list(tokens)
        if tokens and tokens[0].startswith(SPIECE_UNDERLINE):
            tokens[0] = tokens[0][1:]
        specials = set(self.all_special_tokens)
        out, run, prev_special = "", [], False
        for i, token in enumerate(tokens):
            if token not in specials:
                run.append(token)
                prev_special = False
                continue
            out += (" " if self.legacy and i and not prev_special else "") + self.sp_model.decode(run) + token
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
        """4.37's decoding: added non-special tokens (and extra special ones past the vocabulary) stand apart."""
        ids = [token_ids] if isinstance(token_ids, int) else token_ids
        tokens = self.convert_ids_to_tokens(ids, skip_special_tokens=skip_special_tokens)
        specials = set(self.all_special_tokens)
        apart = {t for t in self._added_tokens_encoder if t not in specials}
        apart |= {str(t) for t in self.extra_special_tokens if self.convert_tokens_to_ids(str(t)) >= self.vocab_size}
        texts, run = [], []
        for token in tokens:
            if token not in apart:
                run.append(token)
                continue
            if run and (text := self.convert_tokens_to_string(run)):
                texts.append(text)
            texts.append(token)
            run = []
        if run:
            texts.append(self.convert_tokens_to_string(run))
        text = (" " if spaces_between_special_tokens else "").join(texts)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> tuple[str, ...]:
        """transformers' save, plus what 4.37's ``AutoTokenizer`` needs to read the folder back.

        That is the class name ``LlamaTokenizer``, the bos/eos flags, ``additional_special_tokens``
        and a ``special_tokens_map.json``. Returns the files written.
        """
        files = super().save_pretrained(save_directory, **kwargs)
        config_file = Path(next(f for f in files if str(f).endswith("tokenizer_config.json")))
        config = json.loads(config_file.read_text(encoding="utf-8"))
        config.pop("extra_special_tokens", None)
        config.update(tokenizer_class="LlamaTokenizer", add_bos_token=self.add_bos_token)
        config["add_eos_token"] = self.add_eos_token
        special_map = dict(self.special_tokens_map)
        if self.extra_special_tokens:
            extra = [str(t) for t in self.extra_special_tokens]
            config["additional_special_tokens"] = special_map["additional_special_tokens"] = extra
        map_file = config_file.with_name(config_file.name.replace("tokenizer_config", "special_tokens_map"))
        for file, content in ((config_file, config), (map_file, special_map)):
            file.write_text(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        return tuple(str(f) for f in (*files, map_file) if os.path.isfile(f))


# ---- loading ------------------------------------------------------------------------------------


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete the file") from err


def tokenizer_family(folder: str | os.PathLike) -> str:
    """``"llama"`` for a LLaMA sentencepiece folder (``tokenizer.model``, LLaMA or no tokenizer_class), else "auto"."""
    folder = Path(folder)
    tokenizer_class = _read_config(folder).get("tokenizer_class") or "LlamaTokenizer"
    if (folder / "tokenizer.model").is_file() and tokenizer_class.lower() in LLAMA_TOKENIZER_CLASSES:
        return "llama"
    if not any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise FileNotFoundError(
            f"no tokenizer files in {str(folder)!r}: expected tokenizer.model (LLaMA sentencepiece) "
            "or tokenizer.json / tokenizer_config.json"
        )
    return "auto"


def _load_slow_llama(folder: Path, **overrides: Any) -> SlowLlamaTokenizer:
    config = _read_config(folder)
    # transformers 5 ignores the config's bos/eos flags when a tokenizer.json sits next to it; 4.37 did not.
    flags = {k: config[k] for k in ("add_bos_token", "add_eos_token") if k in config}
    return SlowLlamaTokenizer.from_pretrained(str(folder), local_files_only=True, **{**flags, **overrides})


def _load_auto(folder: Path, **overrides: Any) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **overrides)


# Tokenizer family -> loader. "llama": LLaMA / Vicuna / Mistral sentencepiece checkpoints as LLaVA tokenized them.
TOKENIZER_LOADERS: dict[str, Callable[..., PreTrainedTokenizerBase]] = {"llama": _load_slow_llama, "auto": _load_auto}


def load_tokenizer(path: str | os.PathLike, family: str | None = None, **overrides: Any) -> PreTrainedTokenizerBase:
    """The tokenizer of a checkpoint folder (or a hub id in the local cache; never downloads).

    family: a key of :data:`TOKENIZER_LOADERS`; None detects it with :func:`tokenizer_family`.
    overrides: keyword arguments for the tokenizer (``legacy=False``, ``padding_side="left"`` ...).
    """
    from .multimodal_encoder.builder import resolve_pretrained_dir  # here, to keep this module free of torch

    folder = Path(resolve_pretrained_dir(str(path)))
    family = family or tokenizer_family(folder)
    if family not in TOKENIZER_LOADERS:
        raise ValueError(f"{str(path)!r}: unknown tokenizer family {family!r}; use one of {sorted(TOKENIZER_LOADERS)}")
    return TOKENIZER_LOADERS[family](folder, **overrides)


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
    shutil.copyfile(TINY_TOKENIZER_MODEL, folder / "tokenizer.model")
    config, special_map = tiny_tokenizer_config()
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
    return folder


__all__ = [
    "SlowLlamaTokenizer",
    "TINY_TOKENIZER_MODEL",
    "TOKENIZER_LOADERS",
    "load_tokenizer",
    "save_tiny_tokenizer",
    "tiny_tokenizer_config",
    "tokenizer_family",
]
