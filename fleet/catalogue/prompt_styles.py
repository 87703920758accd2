"""Xinference's `prompt_style`, the chat format of its older custom-LLM files (its
`PromptStyleV1`, up to release 0.14), read as a Fleet chat template and stops.

A style is a `style_name` (which of Xinference's formatting rules to follow) and the strings that
rule writes: `system_prompt` (the default system text), `roles` (what "user" and "assistant"
turns are called), `intra_message_sep` and `inter_message_sep`, with `stop` strings and
`stop_token_ids` that end an answer. Fleet turns it into the equivalent Jinja template
(fleet.catalogue.prompt_style_templates), rendered like every other template, and sets the
family's `stop` and `stop_token_ids` from it (the file's own top-level lists win, as with a
borrowed format). A request's system messages replace `system_prompt`, joined by ". ", as on
Xinference.

Styles read (names compared without regard to case):
ADD_COLON_SINGLE, ADD_COLON_SINGLE_COT, ADD_COLON_TWO, NO_COLON_TWO (Vicuna, WizardLM, Orca,
Baichuan, Zephyr and other FastChat-like formats), LLAMA2 (Llama 2, Mistral v0.1-0.3),
LLAMA3, MIXTRAL_V01, mistral-nemo, CHATML (Yi, OpenHermes), QWEN (Qwen 1-2, ChatML with a system
turn), INTERNLM, INTERNLM2, CHATGLM, CHATGLM3 (GLM-4 too), PHI3, gemma, DEEPSEEK_CHAT,
DEEPSEEK_CODER, FALCON, XVERSE, orion, CodeShell, MINICPM-2B, c4ai-command-r, INSTRUCTION.

Where Xinference's rendering wrote something its model was not trained on, the model's format is
written instead: PHI3 opened the answer twice ("<|assistant|>\\n" twice) and MIXTRAL_V01 closed
the turn (" </s>") before the answer. gemma, orion, CodeShell, MINICPM-2B, MIXTRAL_V01 and
INTERNLM have no place for a system prompt; Xinference left a request's system text out, and so
does Fleet. QWEN's and CHATGLM3's tool prompts are not carried over: a family with the `tools`
ability needs a Jinja chat_template.

Refused, with the reason: GORILLA_OPENFUNCTIONS (the request's tools written in Gorilla's own
function format, whose calls Fleet's tool-call parsing does not read), OmniLMM and INTERNVL
(Xinference's code for vision models, which passed images to the model beside the text), and any
name Xinference never had."""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleet.catalogue.prompt_style_templates import PARTS, build_template

# Upper-case name -> the name Xinference wrote (its names mix cases: "gemma", "CodeShell").
SUPPORTED_STYLES: dict[str, str] = {
    name.upper(): name for name in (
        "ADD_COLON_SINGLE", "ADD_COLON_SINGLE_COT", "ADD_COLON_TWO", "NO_COLON_TWO", "LLAMA2",
        "LLAMA3", "MIXTRAL_V01", "mistral-nemo", "CHATML", "QWEN", "INTERNLM", "INTERNLM2",
        "CHATGLM", "CHATGLM3", "PHI3", "gemma", "DEEPSEEK_CHAT", "DEEPSEEK_CODER", "FALCON",
        "XVERSE", "orion", "CodeShell", "MINICPM-2B", "c4ai-command-r", "INSTRUCTION")
}
_OWN_BODIES = {"INTERNLM", "INSTRUCTION"}
assert set(SUPPORTED_STYLES) == set(PARTS) | _OWN_BODIES

_VISION = ("was Xinference's code for a vision model, which passed images to the model beside "
           "the text; it is no text format")
REFUSED_STYLES: dict[str, str] = {
    "GORILLA_OPENFUNCTIONS": "writes the request's tools in Gorilla's own function format and "
                             "answers calls in it, which Fleet's tool-call parsing does not read",
    "OMNILMM": _VISION,
    "INTERNVL": _VISION,
}
_FIX = "; give the model's format as a Jinja chat_template instead"


def check_style_name(name: str) -> str:
    """The canonical (upper-case) name of a style Fleet reads; a ValueError says why not."""
    key = name.strip().upper()
    if key in SUPPORTED_STYLES:
        return key
    if key in REFUSED_STYLES:
        raise ValueError(f"prompt style {name!r} {REFUSED_STYLES[key]}{_FIX}")
    raise ValueError(f"prompt style {name!r} is not one of Xinference's; Fleet reads "
                     f"{', '.join(SUPPORTED_STYLES.values())}{_FIX}")


def _instruction_pieces(system_prompt: str) -> list[str | None]:
    """INSTRUCTION's system prompt is a Python format string with `{0}` (or `{}`) where the
    question goes: its text pieces, None for each `{0}`; any other field is refused."""
    pieces: list[str | None] = []
    try:
        parsed = list(string.Formatter().parse(system_prompt))
    except ValueError as exc:
        raise ValueError(f"prompt style INSTRUCTION: system_prompt is not a valid format "
                         f"string: {exc}") from None
    for text, field, spec, conversion in parsed:
        if text:
            pieces.append(text)
        if field is None:
            continue
        if field not in ("", "0") or spec or conversion:
            raise ValueError("prompt style INSTRUCTION: system_prompt may only hold {0}, where "
                             f"the question goes, not {{{field}}}")
        pieces.append(None)
    return pieces


class PromptStyle(BaseModel):
    """Xinference's PromptStyleV1; unknown keys are refused (a misspelt separator would
    otherwise be an empty one)."""

    model_config = ConfigDict(extra="forbid")

    style_name: str
    system_prompt: str = ""
    roles: list[str] = Field(min_length=2, max_length=2)
    intra_message_sep: str = ""
    inter_message_sep: str = ""
    stop: list[str] | None = None
    stop_token_ids: list[int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _nulls_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @field_validator("style_name")
    @classmethod
    def _known_style(cls, value: str) -> str:
        return check_style_name(value)

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str] | None) -> list[str] | None:
        # Xinference's form starts its lists with one empty entry: an empty stop is none.
        return [s for s in value if s] if value is not None else None

    @model_validator(mode="after")
    def _instruction_fields(self) -> PromptStyle:
        if self.style_name == "INSTRUCTION":
            _instruction_pieces(self.system_prompt)
        return self


@dataclass(frozen=True)
class ChatFormat:
    chat_template: str
    stop: list[str]
    stop_token_ids: list[int]


def chat_format(style: PromptStyle) -> ChatFormat:
    """The Jinja template, stop strings and stop ids that say what `style` says."""
    instruction = (_instruction_pieces(style.system_prompt)
                   if style.style_name == "INSTRUCTION" else None)
    template = build_template(style.style_name, style.system_prompt, style.roles,
                              style.intra_message_sep, style.inter_message_sep, instruction)
    return ChatFormat(template, list(style.stop or []), list(style.stop_token_ids or []))


def check_style_fits(style: PromptStyle | str, data: dict[str, Any]) -> None:
    """A style and the family fields already read (pydantic's `info.data`) that it would
    contradict: a chat_template too, or the `tools` ability that no style template serves."""
    if data.get("chat_template"):
        raise ValueError("prompt_style and chat_template both say how to format a chat; give "
                         "one of them")
    if isinstance(style, PromptStyle) and "tools" in (data.get("model_ability") or []):
        raise ValueError(f"prompt style {SUPPORTED_STYLES[style.style_name]} writes no tool "
                         "definitions (Xinference's own tool prompts are not carried over); "
                         "remove 'tools' from model_ability, or give a Jinja chat_template "
                         "that renders tools")
