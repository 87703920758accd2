"""The Jinja chat template of each of Xinference's prompt styles (fleet.catalogue.prompt_styles
says what a style is and which are read).

A template is built of one prelude and the style's three parts. The prelude binds the style's
fields as Jinja names, so the parts never hold a user's text:
- `R0`, `R1`: the style's two roles, written for "user" and "assistant" turns (any other role,
  "tool", is written under its own name, as Xinference wrote it);
- `A`, `B`: its `intra_message_sep` and `inter_message_sep`;
- `system`: the request's system messages joined by ". ", or the style's `system_prompt` when
  they are empty (Xinference put the request's system text in place of the whole
  `system_prompt`);
- `chat`: the other messages, in order.
Then `head` is written once, `message` for each message of `chat` (with `m`, its `role` as the
style names it, and `even`: whether its position in `chat` is even, the user's side where a
style alternates separators), and `generation` where the assistant's answer begins.

Xinference wrote a message without content as its role alone, the way it writes the opening of
the answer; the parts do the same. The template source holds no line break: every newline it
writes is a `{{ NL }}`, so the renderer's trim_blocks and lstrip_blocks change nothing."""

from __future__ import annotations

from dataclasses import dataclass

NL = "{{ NL }}"
_ROLE = ('{% set role = R0 if m.role == "user" else (R1 if m.role == "assistant" '
         'else m.role) %}')


@dataclass(frozen=True)
class StyleParts:
    head: str
    message: str
    generation: str


def jinja_literal(text: str) -> str:
    """`text` as a Jinja string literal: quotes, backslashes and control characters escaped;
    other characters, any language's included, kept as they are."""
    escaped = []
    for char in text:
        if char in '"\\':
            escaped.append("\\" + char)
        elif char == "\n":
            escaped.append("\\n")
        elif not char.isprintable():
            code = ord(char)
            escaped.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            escaped.append(char)
    return '"' + "".join(escaped) + '"'


# Message parts shared by several styles.
_COLON_ONE_SEP = ("{% if m.content %}{{ role }}: {{ m.content }}{{ A }}"
                  "{% else %}{{ role }}:{% endif %}")
_COLON_TWO_SEPS = ("{% if m.content %}{{ role }}: {{ m.content }}{{ A if even else B }}"
                   "{% else %}{{ role }}:{% endif %}")
_NO_COLON_TWO_SEPS = ("{% if m.content %}{{ role }}{{ m.content }}{{ A if even else B }}"
                      "{% else %}{{ role }}{% endif %}")
_ROLE_LINE = ("{% if m.content %}{{ role }}" + NL + "{{ m.content }}{{ A }}" + NL
              + "{% else %}{{ role }}" + NL + "{% endif %}")

PARTS: dict[str, StyleParts] = {
    "ADD_COLON_SINGLE": StyleParts("{{ system }}{{ A }}", _COLON_ONE_SEP, "{{ R1 }}:"),
    "ADD_COLON_SINGLE_COT": StyleParts("{{ system }}{{ A }}", _COLON_ONE_SEP,
                                       "{{ R1 }}: Let's think step by step."),
    "ADD_COLON_TWO": StyleParts("{{ system }}{{ A }}", _COLON_TWO_SEPS, "{{ R1 }}:"),
    "DEEPSEEK_CHAT": StyleParts("{{ system }}", _COLON_TWO_SEPS, "{{ R1 }}:"),
    "NO_COLON_TWO": StyleParts("{{ system }}", _NO_COLON_TWO_SEPS, "{{ R1 }}"),
    # The first message follows the system prompt directly: the style's system_prompt holds
    # the opening "[INST]" (and <<SYS>> block) itself.
    "LLAMA2": StyleParts(
        "",
        "{% if m.content %}{% if loop.first %}{{ system }}{{ m.content }}"
        "{% else %}{{ role }} {{ m.content }}{{ A if even else B }}{% endif %}"
        "{% else %}{{ role }}{% endif %}",
        "{{ R1 }}"),
    "LLAMA3": StyleParts(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>{{ A }}{{ system }}{{ B }}",
        "<|start_header_id|>{{ role }}<|end_header_id|>{{ A }}"
        "{% if m.content %}{{ m.content }}{{ B }}{% endif %}",
        "<|start_header_id|>{{ R1 }}<|end_header_id|>{{ A }}"),
    "FALCON": StyleParts(
        "{{ system }}",
        '{% if m.content %}{{ role }}: {{ m.content | replace("\\r\\n", "\\n") '
        '| replace("\\n\\n", "\\n") }}' + NL + NL + "{% else %}{{ role }}:{% endif %}",
        "{{ R1 }}:"),
    # Xinference wrote " </s>" after the last "[/INST]" too, which ends the turn before the
    # answer; the answer starts right after "[/INST]" here, as Mixtral was trained.
    "MIXTRAL_V01": StyleParts(
        "",
        "{% if even %}<s> [INST] {{ m.content }} [/INST]{% else %}{{ m.content }} </s>{% endif %}",
        ""),
    # Rounds are numbered from 1 when the separator is "\n\n" (ChatGLM2), from 0 otherwise.
    "CHATGLM": StyleParts(
        '{% set N = 1 if A == "\\n\\n" else 0 %}{% if system %}{{ system }}{{ A }}{% endif %}',
        "{% if even %}[Round {{ loop.index0 // 2 + N }}]{{ A }}{% endif %}"
        "{% if m.content %}{{ role }}：{{ m.content }}{{ A }}{% else %}{{ role }}：{% endif %}",
        "{% if chat | length % 2 == 0 %}[Round {{ (chat | length) // 2 + N }}]{{ A }}{% endif %}"
        "{{ R1 }}："),
    # Turns joined by newlines; a tool's answer is an "observation".
    "CHATGLM3": StyleParts(
        "{% set turns = namespace(started=false) %}"
        "{% if system %}<|system|>" + NL + " {{ system }}{% set turns.started = true %}{% endif %}",
        "{% if turns.started %}" + NL + "{% endif %}{% set turns.started = true %}"
        "{% if m.content %}<|{{ 'observation' if role == 'tool' else role }}|>" + NL
        + " {{ m.content }}{% else %}<|{{ role }}|>{% endif %}",
        "{% if turns.started %}" + NL + "{% endif %}<|{{ R1 }}|>"),
    "XVERSE": StyleParts(
        "{% if system %}<|system|> " + NL + " {{ system }}{% endif %}",
        "{% if m.content %}<|{{ role }}|> " + NL + " {{ m.content }}"
        "{% else %}<|{{ role }}|>{% endif %}",
        "<|{{ R1 }}|>"),
    "QWEN": StyleParts(
        "<|im_start|>system" + NL + "{{ system }}<|im_end|>",
        "{{ A }}{% if m.content %}<|im_start|>{{ role }}" + NL
        + "{{ m.content.lstrip(NL).rstrip() }}<|im_end|>"
        "{% else %}<|im_start|>{{ role }}" + NL + "{% endif %}",
        "{{ A }}<|im_start|>{{ R1 }}" + NL),
    "CHATML": StyleParts("{% if system %}{{ system }}{{ A }}" + NL + "{% endif %}", _ROLE_LINE,
                         "{{ R1 }}" + NL),
    "INTERNLM2": StyleParts(
        "<s>{% if system %}<|im_start|>system" + NL + "{{ system }}{{ A }}" + NL + "{% endif %}",
        _ROLE_LINE, "{{ R1 }}" + NL),
    "DEEPSEEK_CODER": StyleParts(
        "{{ system }}{{ B }}",
        "{{ role }}" + NL + "{% if m.content %}{{ m.content }}{{ B }}{% endif %}",
        "{{ R1 }}" + NL),
    "PHI3": StyleParts(
        # Xinference wrote "<|assistant|>\n" twice at the end; once is Phi-3's format.
        "<|system|>{{ A }}{{ system }}{{ B }}",
        "<|{{ role }}|>{{ A }}{% if m.content %}{{ m.content }}{{ B }}{% endif %}",
        "<|{{ R1 }}|>{{ A }}"),
    "C4AI-COMMAND-R": StyleParts(
        "<BOS_TOKEN><|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>{{ system }}{{ B }}",
        "{{ role }}{% if m.content %}{{ m.content }}{{ B }}{% endif %}",
        "{{ R1 }}"),
    # The system prompt opens the last question.
    "MISTRAL-NEMO": StyleParts(
        "<s>",
        "{% if m.content %}{{ role }} {% if loop.last and system %}{{ system }}" + NL + NL
        + "{% endif %}{{ m.content }}{{ A if even else B }}{% else %}{{ role }}{% endif %}",
        "{{ R1 }}"),
    # The styles below have no place for a system prompt: Xinference left it out.
    "GEMMA": StyleParts(
        "",
        "<start_of_turn>{{ role }}" + NL + "{% if m.content %}{{ m.content }}<end_of_turn>" + NL
        + "{% endif %}",
        "<start_of_turn>{{ R1 }}" + NL),
    "ORION": StyleParts(
        "<s>",
        "{% if even %}{{ role }}: {{ m.content }}" + NL + NL
        + "{% else %}{{ role }}: </s>{% if m.content %}{{ m.content }}</s>{% endif %}{% endif %}",
        "{{ R1 }}: </s>"),
    "CODESHELL": StyleParts(
        "",
        "{% if m.content %}{{ role }}{{ m.content }}|<end>|{% else %}{{ role.rstrip() }}{% endif %}",
        "{{ R1.rstrip() }}"),
    "MINICPM-2B": StyleParts(
        "",
        '{% if role == "user" %}<用户>{% else %}<AI>{% endif %}{{ m.content.strip() }}',
        '{% if R1 == "user" %}<用户>{% else %}<AI>{% endif %}'),
}


def _prelude(system_prompt: str, roles: list[str], intra: str, inter: str) -> str:
    return (
        f"{{% set NL = {jinja_literal(chr(10))} %}}"
        f"{{% set R0 = {jinja_literal(roles[0])} %}}{{% set R1 = {jinja_literal(roles[1])} %}}"
        f"{{% set A = {jinja_literal(intra)} %}}{{% set B = {jinja_literal(inter)} %}}"
        '{% set joined = messages | selectattr("role", "equalto", "system") '
        '| map(attribute="content") | join(". ") %}'
        f"{{% set system = joined if joined else {jinja_literal(system_prompt)} %}}"
        '{% set chat = messages | rejectattr("role", "equalto", "system") | list %}'
    )


def _internlm_body() -> str:
    """InternLM (v1): every earlier turn opens with <s> on the user's side; the last message
    is written as the user's (<s> only when it is the first), then the answer's opening."""
    return (
        "{% if chat %}{% for m in chat[:-1] %}" + _ROLE
        + "{% if loop.index0 % 2 == 0 %}<s>{% endif %}"
        "{{ role }}:{{ m.content }}{{ A if loop.index0 % 2 == 0 else B }}{% endfor %}"
        "{% if chat | length == 1 %}<s>{% endif %}{% set m = chat[-1] %}" + _ROLE
        + "{{ role }}:{{ m.content }}{{ A }}{% endif %}"
        "{% if add_generation_prompt %}{{ R1 }}:{% endif %}"
    )


def _instruction_body(pieces: list[str | None]) -> str:
    """The system prompt is an instruction with `{0}` where the last message goes; nothing
    else is written (the instruction ends where the answer begins). A request's own system
    text is used the same way."""
    default = "".join("{{ question }}" if piece is None else "{{ " + jinja_literal(piece) + " }}"
                      for piece in pieces)
    return (
        "{% if chat %}{% set question = chat[-1].content %}"
        '{% if joined %}{{ joined.replace("{0}", question) }}{% else %}' + default
        + "{% endif %}{% endif %}"
    )


def build_template(style: str, system_prompt: str, roles: list[str], intra: str, inter: str,
                   instruction: list[str | None] | None = None) -> str:
    """The Jinja source of `style` (a key of PARTS, or INTERNLM / INSTRUCTION) with these
    fields; `instruction` is INSTRUCTION's system prompt split at its `{0}` (None marks one)."""
    prelude = _prelude(system_prompt, roles, intra, inter)
    if style == "INTERNLM":
        return prelude + _internlm_body()
    if style == "INSTRUCTION":
        return prelude + _instruction_body(instruction or [])
    parts = PARTS[style]
    return (prelude + parts.head
            + "{% for m in chat %}" + _ROLE + "{% set even = loop.index0 % 2 == 0 %}"
            + parts.message + "{% endfor %}"
            + "{% if add_generation_prompt %}" + parts.generation + "{% endif %}")
