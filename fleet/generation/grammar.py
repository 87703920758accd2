"""A Constraint -> a grammar checked by llguidance, the one grammar library of Fleet's engines:
the Transformers engine masks logits with llguidance's matcher (fleet.engines.constrained), and
llama.cpp (xllamacpp is built with llguidance) takes the same text as a `%llguidance` grammar.

Why llguidance and not xgrammar: it installs as one wheel without dependencies (xgrammar pulls
triton and its own torch requirement), it is the library llama.cpp itself links, and it compiles
lazily, so a new schema costs well under a millisecond before its first token.

Why check here: llama.cpp logs a grammar it cannot compile and then generates unconstrained
text, so every grammar is compiled by llguidance in the replica before the request queues, and a
schema the library refuses is a 400 that quotes it. Checked grammars are kept in an LRU keyed by
the constraint's canonical text."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from fleet.errors import BadRequest
from fleet.generation.structured import Constraint
from fleet.generation.tool_calls import CLOSE_TAG, OPEN_TAG

GRAMMAR_CACHE_SIZE = 256
# JSON as json.dumps writes it: separators the models saw in training, and no free whitespace,
# which a small model sampled at a high temperature can otherwise emit until max_tokens.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
LLGUIDANCE_HEADER = "%llguidance {}"
# Text that is no call: anything without the opening tag, which llguidance's regular expressions
# say with an intersection and a negation (a lexeme, so the check costs ~0.02 ms a token).
_NO_CALL_TEXT = f"/(?s:.*)/ & ~/(?s:.*){re.escape(OPEN_TAG)}(?s:.*)/"
# A call's block, as Lark string literals around its JSON.
_BLOCK_START, _BLOCK_END = json.dumps(OPEN_TAG + "\n"), json.dumps("\n" + CLOSE_TAG)


def _json_lark(schema: dict[str, Any]) -> str:
    layout = {**JSON_LAYOUT, **(schema.get("x-guidance") or {})}
    return "%json " + json.dumps({**schema, "x-guidance": layout}, ensure_ascii=False)


def _tool_calls_lark(spec: dict[str, Any]) -> str:
    """Calls in the generic format (fleet.generation.tool_use), each a block around its JSON; when
    text is allowed, the answer is either text without a block or calls only, so every answer is
    plain text or valid calls, never a broken call left as text."""
    schemas = spec["calls"]
    call = _json_lark(schemas[0] if len(schemas) == 1 else {"anyOf": schemas})
    lines = [f"call: {_BLOCK_START} {call} {_BLOCK_END}",
             'calls: call ("\\n" call)*' if spec["parallel"] else "calls: call"]
    if spec["text"]:
        return "\n".join(["start: TEXT | calls", *lines, f"TEXT: {_NO_CALL_TEXT}"])
    return "\n".join(["start: calls", *lines])


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError:
        raise BadRequest("structured output needs the llguidance package on this model's worker "
                         "(pip install llguidance)", code="unsupported_parameter") from None
    return llguidance


def _lark(constraint: Constraint) -> str:
    llguidance = _llguidance()
    if constraint.kind == "json_schema":
        return "start: " + _json_lark(json.loads(constraint.spec))
    if constraint.kind == "tool_calls":
        return _tool_calls_lark(json.loads(constraint.spec))
    if constraint.kind == "choice":
        return "start: " + " | ".join(json.dumps(c, ensure_ascii=False)
                                      for c in json.loads(constraint.spec))
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        if constraint.kind == "regex":
            return "start: /" + llguidance.regex_to_lark(constraint.spec) + "/"
        # GBNF (llama.cpp's grammars, as Xinference's users write them) or Lark
        return str(any_to_lark(constraint.spec))
    except Exception as exc:  # the converters raise their own error types, and ValueError
        raise BadRequest(f"{constraint.source} cannot be used: {exc}", code="invalid_grammar") from None


def _first_error(messages: list[str]) -> str:
    """llguidance's first message on one line, without its quote of the grammar
    ("at 1(8): failed to compile JSON schema: ...\n   1 | start: ...\n   ^")."""
    lines = []
    for line in (messages[0] if messages else "the grammar is invalid").splitlines():
        if re.match(r"\s+\d+ \|", line):
            break
        if line.strip() and line.strip("^ "):
            lines.append(line.strip())
    text = " ".join(lines)
    return re.sub(r"^at \d+\(\d+\): ", "", text)


@lru_cache(maxsize=GRAMMAR_CACHE_SIZE)
def checked_grammar(constraint: Constraint) -> str:
    """The constraint as Lark text (llguidance's grammar language), compiled once to check it.
    Raises BadRequest naming what the library refused."""
    llguidance = _llguidance()
    lark = _lark(constraint)
    try:
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(
            llguidance.LLMatcher.grammar_from_lark(lark))
    except Exception as exc:  # the library's own errors: whatever it cannot read is the client's
        failed, messages = True, [str(exc)]
    if failed:
        code = "unsupported_schema" if constraint.kind == "json_schema" else "invalid_grammar"
        raise BadRequest(f"{constraint.source} cannot be used: {_first_error(messages)}", code=code)
    return lark


def llama_cpp_grammar(lark: str) -> str:
    """The text llama.cpp's `grammar` field takes for a llguidance grammar."""
    return lark if lark.startswith(LLGUIDANCE_HEADER) else f"{LLGUIDANCE_HEADER}\n{lark}"
