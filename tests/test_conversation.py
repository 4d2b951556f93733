"""Conversation templates: prompts byte-identical to the original LLaVA's, API shape, errors."""

from __future__ import annotations

import pytest

from llava.conversation import Conversation, SeparatorStyle, conv_templates, default_conversation, get_conv_template
from oracle import run_oracle

# Templates LLaVA-1.5/1.6 checkpoints use, and the older ones kept for compatibility.
TEMPLATES = [
    "vicuna_v1", "llava_v1", "v1", "plain", "v0_plain", "llava_llama_2", "llama_2", "mistral_instruct",
    "chatml_direct", "mistral_direct", "mpt", "v0", "llava_v0", "default", "v0_mmtag", "v1_mmtag",
]
SYSTEM = "You are a careful visual assistant.\nAnswer briefly."


def _scenarios() -> list[dict]:
    """(template, turns, system override, image-tuple first message) cases; turns as [user, assistant|None] pairs."""
    one = [["<image>\nWhat is in the image?", None]]
    two = [["<image>\nWhat is in the image?", "A red car.\nIt is parked."], ["And the color of the sky?", None]]
    closed = [["Describe it.", "A dog </s> sits."], ["Is it happy?", "Yes"]]
    out = []
    for name in TEMPLATES:
        plain_ok = not name.endswith("plain")
        out.append(dict(name=name, turns=one, system=None, image_tuple=False))
        out.append(dict(name=name, turns=one, system=SYSTEM, image_tuple=False))
        if plain_ok:  # the PLAIN style has no sep2: an answer turn is not allowed there
            out.append(dict(name=name, turns=two, system=None, image_tuple=False))
            out.append(dict(name=name, turns=two, system=SYSTEM, image_tuple=False))
            out.append(dict(name=name, turns=closed, system="", image_tuple=False))
            out.append(dict(name=name, turns=two, system=None, image_tuple=True))
    return out


BUILD = r"""
def build(conv, case):
    if case["system"] is not None:
        conv.system = case["system"]
    for i, (user, answer) in enumerate(case["turns"]):
        if i == 0 and case["image_tuple"]:
            user = (user, None, "Default")
        conv.append_message(conv.roles[0], user)
        conv.append_message(conv.roles[1], answer)
    return conv.get_prompt()
"""

ORACLE_JOB = BUILD + r"""
from llava.conversation import conv_templates, default_conversation
RESULT = {
    "prompts": [build(conv_templates[c["name"]].copy(), c) for c in PAYLOAD["cases"]],
    "templates": {
        n: dict(system=t.system, roles=list(t.roles), sep=t.sep, sep2=t.sep2, version=t.version, offset=t.offset,
                style=t.sep_style.name, messages=[list(m) for m in t.messages])
        for n, t in conv_templates.items()
    },
    "default": default_conversation.get_prompt(),
}
"""
namespace: dict = {}
exec(BUILD, namespace)
build = namespace["build"]


@pytest.fixture(scope="module")
def oracle_result() -> dict:
    return run_oracle(ORACLE_JOB, {"cases": _scenarios()})


def test_prompts_match_original(oracle_result: dict) -> None:
    cases = _scenarios()
    mine = [build(conv_templates[c["name"]].copy(), c) for c in cases]
    for case, want, got in zip(cases, oracle_result["prompts"], mine):
        assert got == want, case


def test_template_fields_match_original(oracle_result: dict) -> None:
    for name, want in oracle_result["templates"].items():
        t = conv_templates[name]
        got = dict(system=t.system, roles=list(t.roles), sep=t.sep, sep2=t.sep2, version=t.version, offset=t.offset,
                   style=t.sep_style.name, messages=[list(m) for m in t.messages])
        assert got == want, name
    assert default_conversation.get_prompt() == oracle_result["default"]


def test_llava_v1_prompt_literal() -> None:
    conv = conv_templates["llava_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat is shown?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == (
        "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the human's questions. USER: <image>\nWhat is shown? ASSISTANT:"
    )
    assert (conv.sep, conv.sep2, conv.roles) == (" ", "</s>", ("USER", "ASSISTANT"))
    assert conv.sep_style is SeparatorStyle.TWO


def test_copy_is_independent() -> None:
    base = conv_templates["vicuna_v1"]
    conv = base.copy()
    conv.append_message(conv.roles[0], "hi")
    assert base.messages == [] and conv.messages == [["USER", "hi"]]
    assert isinstance(get_conv_template("plain"), Conversation)
    assert conv_templates["v1"] is conv_templates["vicuna_v1"]


def test_unknown_template_lists_names() -> None:
    with pytest.raises(KeyError, match="available: .*llava_v1"):
        conv_templates["llava_v9"]


def test_llama_2_needs_user_first() -> None:
    conv = conv_templates["llava_llama_2"].copy()
    conv.append_message(conv.roles[0], None)
    with pytest.raises(ValueError, match="USER"):
        conv.get_prompt()


def test_plain_answer_needs_sep2() -> None:
    conv = conv_templates["plain"].copy()
    conv.append_message(conv.roles[0], "<image>\n")
    conv.append_message(conv.roles[1], "a caption")
    with pytest.raises(ValueError, match="sep2"):
        conv.get_prompt()

