"""Conversation templates of LLaVA-1.5 / 1.6 checkpoints and the prompt text they produce.

Usage, as in LLaVA::

    conv = conv_templates["llava_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\\nWhat is shown?")
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()   # "... USER: <image>\\nWhat is shown? ASSISTANT:"

The strings (system prompts, role names, separators) are those of the original LLaVA templates,
and ``get_prompt()`` returns byte-identical text.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any, Callable

from llava.constants import DEFAULT_IMAGE_TOKEN

Message = Any  # a str, None (the slot the model fills), or (text, image, image_process_mode)


class SeparatorStyle(Enum):
    """How turns are joined into a prompt."""

    SINGLE = 1  # "{system}{sep}{role}: {msg}{sep}..."
    TWO = 2  # like SINGLE, alternating sep (after user turns) and sep2 (after assistant turns)
    MPT = 3  # chatml: "{system}{sep}{role}{msg}{sep}..." where roles carry their own markers
    PLAIN = 4  # messages only, no roles (pretraining / captioning)
    LLAMA_2 = 5  # "[INST] <<SYS>>...<</SYS>> msg [/INST] answer </s><s>[INST] ..."


def _text(message: Message) -> str:
    """The text of a message; image messages are ``(text, image, image_process_mode)`` tuples."""
    return message[0] if isinstance(message, tuple) else message


@dataclasses.dataclass
class Conversation:
    """A template plus the turns appended so far."""

    system: str
    roles: tuple[str, str]
    messages: list[list[Message]]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"
    skip_next: bool = False

    def append_message(self, role: str, message: Message) -> None:
        """Add a turn; ``message=None`` leaves the slot the model's answer goes into."""
        self.messages.append([role, message])

    def copy(self) -> "Conversation":
        """A fresh conversation with this template and a copy of its messages."""
        return Conversation(
            system=self.system,
            roles=self.roles,
            messages=[[role, message] for role, message in self.messages],
            offset=self.offset,
            sep_style=self.sep_style,
            sep=self.sep,
            sep2=self.sep2,
            version=self.version,
        )

    def dict(self) -> dict[str, Any]:
        """JSON-able view (images reduced to their text)."""
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": [[role, _text(message)] for role, message in self.messages],
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }

    def _prompt_messages(self) -> list[list[Message]]:
        """Messages with an image-bearing first turn rewritten to put the image token first."""
        messages = [list(m) for m in self.messages]
        if not messages or not isinstance(messages[0][1], tuple):
            return messages
        role, first = messages[0]
        text = first[0].replace(DEFAULT_IMAGE_TOKEN, "").strip()
        if "mmtag" in self.version:
            messages[0] = [role, text]
            messages[:0] = [[self.roles[0], "<Image><image></Image>"], [self.roles[1], "Received."]]
        else:
            messages[0] = [role, DEFAULT_IMAGE_TOKEN + "\n" + text]
        return messages

    def get_prompt(self) -> str:
        """The prompt text the model is fed (ends with the next role's tag when its message is None)."""
        try:
            render = _RENDERERS[self.sep_style]
        except KeyError:
            raise ValueError(f"unknown separator style {self.sep_style!r}; use a SeparatorStyle member") from None
        return render(self, self._prompt_messages())


def _separators(conv: Conversation) -> tuple[str, str]:
    if conv.sep2 is None:
        raise ValueError(f"template {conv.version!r} with style {conv.sep_style.name} needs sep2; set it on the conversation")
    return conv.sep, conv.sep2


def _render_single(conv: Conversation, messages: list[list[Message]]) -> str:
    turns = (f"{role}: {_text(m)}{conv.sep}" if m else f"{role}:" for role, m in messages)
    return conv.system + conv.sep + "".join(turns)


def _render_two(conv: Conversation, messages: list[list[Message]]) -> str:
    seps = _separators(conv)
    turns = (f"{role}: {_text(m)}{seps[i % 2]}" if m else f"{role}:" for i, (role, m) in enumerate(messages))
    return conv.system + seps[0] + "".join(turns)


def _render_mpt(conv: Conversation, messages: list[list[Message]]) -> str:
    turns = (f"{role}{_text(m)}{conv.sep}" if m else role for role, m in messages)
    return conv.system + conv.sep + "".join(turns)


def _render_plain(conv: Conversation, messages: list[list[Message]]) -> str:
    parts = []
    for i, (_, m) in enumerate(messages):
        if m:
            sep = conv.sep if i % 2 == 0 else _separators(conv)[1]
            parts.append(_text(m) + sep)
    return conv.system + "".join(parts)


def _render_llama_2(conv: Conversation, messages: list[list[Message]]) -> str:
    if messages and (not messages[0][1] or messages[0][0] != conv.roles[0]):
        raise ValueError(f"a {conv.sep_style.name} conversation must open with a non-empty {conv.roles[0]!r} turn")
    system = f"<<SYS>>\n{conv.system}\n<</SYS>>\n\n" if conv.system else ""
    out = ""
    for i, (_, m) in enumerate(messages):
        if not m:
            continue
        text = _text(m)
        if i == 0:
            text = system + text
        if i % 2 == 0:
            out += f"{conv.sep}[INST] {text} [/INST]"
        else:
            out += f" {text} {conv.sep2}"
    # The original strips the leading separator with str.lstrip (a set of characters).
    return out.lstrip(conv.sep)


_RENDERERS: dict[SeparatorStyle, Callable[[Conversation, list[list[Message]]], str]] = {
    SeparatorStyle.SINGLE: _render_single,
    SeparatorStyle.TWO: _render_two,
    SeparatorStyle.MPT: _render_mpt,
    SeparatorStyle.PLAIN: _render_plain,
    SeparatorStyle.LLAMA_2: _render_llama_2,
}

# ---- template text (must match the original byte for byte) ----------------------------------------

SYSTEM_HUMAN = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
SYSTEM_USER = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
SYSTEM_MMTAG = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant is able to understand the visual content that the user provides, "
    "and assist the user with a variety of tasks using natural language."
    "The visual content will be provided with the following format: <Image>visual content</Image>."
)
SYSTEM_LLAMA_2 = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information."
)
SYSTEM_LLAVA_LLAMA_2 = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
SYSTEM_MPT = (
    "<|im_start|>system\n"
    "A conversation between a user and an LLM-based AI assistant. The assistant gives helpful and honest answers."
)
SYSTEM_CHATML_DIRECT = "<|im_start|>system\nAnswer the questions."

# The example exchange the vicuna_v0 template ships with (offset 2 skips it in chat UIs).
VICUNA_V0_EXAMPLE = [
    ["Human", "What are the key differences between renewable and non-renewable energy sources?"],
    [
        "Assistant",
        "Renewable energy sources are those that can be replenished naturally in a relatively short amount of time, "
        "such as solar, wind, hydro, geothermal, and biomass. Non-renewable energy sources, on the other hand, "
        "are finite and will eventually be depleted, such as coal, oil, and natural gas. Here are some key "
        "differences between renewable and non-renewable energy sources:\n"
        "1. Availability: Renewable energy sources are virtually inexhaustible, while non-renewable energy sources "
        "are finite and will eventually run out.\n"
        "2. Environmental impact: Renewable energy sources have a much lower environmental impact than non-renewable "
        "sources, which can lead to air and water pollution, greenhouse gas emissions, and other negative effects.\n"
        "3. Cost: Renewable energy sources can be more expensive to initially set up, but they typically have lower "
        "operational costs than non-renewable sources.\n"
        "4. Reliability: Renewable energy sources are often more reliable and can be used in more remote locations "
        "than non-renewable sources.\n"
        "5. Flexibility: Renewable energy sources are often more flexible and can be adapted to different situations "
        "and needs, while non-renewable sources are more rigid and inflexible.\n"
        "6. Sustainability: Renewable energy sources are more sustainable over the long term, while non-renewable "
        "sources are not, and their depletion can lead to economic and social instability.\n",
    ],
]

_CHATML_ROLES = ("<|im_start|>user\n", "<|im_start|>assistant\n")
_USER_ASSISTANT = ("USER", "ASSISTANT")
_HUMAN_ASSISTANT = ("Human", "Assistant")

# name: (system, roles, sep_style, sep, sep2, version, example messages); aliases below.
_TEMPLATE_TABLE: dict[str, tuple] = {
    "vicuna_v0": (SYSTEM_HUMAN, _HUMAN_ASSISTANT, SeparatorStyle.SINGLE, "###", None, "Unknown", VICUNA_V0_EXAMPLE),
    "vicuna_v1": (SYSTEM_USER, _USER_ASSISTANT, SeparatorStyle.TWO, " ", "</s>", "v1", []),
    "llama_2": (SYSTEM_LLAMA_2, _USER_ASSISTANT, SeparatorStyle.LLAMA_2, "<s>", "</s>", "llama_v2", []),
    "llava_llama_2": (SYSTEM_LLAVA_LLAMA_2, _USER_ASSISTANT, SeparatorStyle.LLAMA_2, "<s>", "</s>", "llama_v2", []),
    "mistral_instruct": ("", _USER_ASSISTANT, SeparatorStyle.LLAMA_2, "", "</s>", "llama_v2", []),
    "chatml_direct": (SYSTEM_CHATML_DIRECT, _CHATML_ROLES, SeparatorStyle.MPT, "<|im_end|>", None, "mpt", []),
    "mpt": (SYSTEM_MPT, _CHATML_ROLES, SeparatorStyle.MPT, "<|im_end|>", None, "mpt", []),
    "plain": ("", ("", ""), SeparatorStyle.PLAIN, "\n", None, "Unknown", []),
    "llava_v0": (SYSTEM_HUMAN, _HUMAN_ASSISTANT, SeparatorStyle.SINGLE, "###", None, "Unknown", []),
    "v0_mmtag": (SYSTEM_MMTAG, _HUMAN_ASSISTANT, SeparatorStyle.SINGLE, "###", None, "v0_mmtag", []),
    "llava_v1": (SYSTEM_HUMAN, _USER_ASSISTANT, SeparatorStyle.TWO, " ", "</s>", "v1", []),
    "v1_mmtag": (SYSTEM_MMTAG, _USER_ASSISTANT, SeparatorStyle.TWO, " ", "</s>", "v1_mmtag", []),
}
_ALIASES = {
    "default": "vicuna_v0",
    "v0": "vicuna_v0",
    "v1": "vicuna_v1",
    "mistral_direct": "chatml_direct",
    "v0_plain": "plain",
}


class TemplateRegistry(dict):
    """``name -> Conversation``; an unknown name raises a KeyError that lists the known ones."""

    def __missing__(self, name: str) -> Conversation:
        raise KeyError(f"unknown conversation template {name!r}; available: {', '.join(sorted(self))}")


def _build(system: str, roles: tuple[str, str], style: SeparatorStyle, sep: str, sep2: str | None, version: str,
           messages: list) -> Conversation:
    return Conversation(
        system=system,
        roles=roles,
        messages=[list(m) for m in messages],
        offset=len(messages),
        sep_style=style,
        sep=sep,
        sep2=sep2,
        version=version,
    )


conv_templates: TemplateRegistry = TemplateRegistry({name: _build(*spec) for name, spec in _TEMPLATE_TABLE.items()})
conv_templates.update({alias: conv_templates[target] for alias, target in _ALIASES.items()})

conv_vicuna_v0 = conv_templates["vicuna_v0"]
conv_vicuna_v1 = conv_templates["vicuna_v1"]
conv_llava_v1 = conv_templates["llava_v1"]
conv_llava_plain = conv_templates["plain"]
conv_llava_llama_2 = conv_templates["llava_llama_2"]
conv_mistral_instruct = conv_templates["mistral_instruct"]
conv_chatml_direct = conv_templates["chatml_direct"]

# What the original LLaVA code uses when no template is named.
default_conversation = conv_vicuna_v1


def get_conv_template(name: str) -> Conversation:
    """A fresh copy of the named template."""
    return conv_templates[name].copy()


__all__ = [
    "Conversation",
    "SeparatorStyle",
    "conv_templates",
    "default_conversation",
    "get_conv_template",
]
