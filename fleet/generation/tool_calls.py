"""Tool calls out of a model's streamed answer, turned into OpenAI `tool_calls`.

Two formats cover the open chat models Fleet serves:
- Qwen2.5/Qwen3/Hermes wrap each call in `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
  text around the blocks is ordinary content. Fleet's generic format, for families without a
  format of their own (fleet.generation.tool_use), is these blocks and nothing else.
- Llama 3.1/3.2 answer with nothing but a JSON object `{"name": ..., "parameters": {...}}`
  (several joined by `;`), maybe after `<|python_tag|>`. Such an answer is held back until it
  is known to be a call or not, then sent as calls or, if it was not one, as content. A forced
  call (fleet.generation.structured) is such an answer too.
Text is never lost: a block that does not parse is sent as content. A call cut short (by
max_tokens) is still a call, with the partial arguments the model wrote, as on OpenAI's API. Where
Fleet's grammar made the calls (a forced answer, the generic format), a block or a forced answer
is nothing but a call, so none of it is ever content.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from fleet.generation.stops import pending_prefix_length

OPEN_TAG, CLOSE_TAG, PYTHON_TAG = "<tool_call>", "</tool_call>", "<|python_tag|>"
_START, _TEXT, _CALL, _JSON = "start", "text", "call", "json"
# The start of a call's JSON, up to its arguments, however far the model got.
_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"(?P<name>(?:[^"\\]|\\.)*)(?P<closed>")?'
                        r'(?P<key>\s*,\s*"(?:arguments|parameters)"\s*:\s*)?', re.S)
_NAME_KEY = '{"name":"'


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


@dataclass(frozen=True)
class ToolFormat:
    """How one request's answer carries calls: `names` are its functions (a cut call's name is
    completed from them); `forced`, the grammar makes the whole answer calls; `generic`, calls
    come only in blocks (the answer never is Llama-style JSON)."""

    names: tuple[str, ...] = ()
    forced: bool = False
    generic: bool = False


def _new_call(name: str, arguments: str) -> ToolCall:
    return ToolCall(id="call_" + uuid.uuid4().hex[:24], name=name, arguments=arguments)


def _as_call(value: Any) -> ToolCall | None:
    """A ToolCall when `value` is {"name": str, "arguments"/"parameters": ...}, else None."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", value.get("parameters"))
    if arguments is None and not ({"arguments", "parameters"} & value.keys()):
        return None
    if not isinstance(arguments, str):
        arguments = json.dumps({} if arguments is None else arguments, ensure_ascii=False)
    return _new_call(value["name"], arguments)


def _json_calls(text: str) -> tuple[list[ToolCall] | None, bool]:
    """Parses `{call}; {call}...`: (the calls or None, whether more text could still make it calls)."""
    calls, rest, possible = _leading_calls(text)
    complete = calls and possible and rest.strip() in ("", ";")
    return (calls, True) if complete else (None, possible)


def _leading_calls(text: str) -> tuple[list[ToolCall], str, bool]:
    """The complete calls `text` starts with, the text after them, and whether that text may
    still continue them (False once something other than a call was read)."""
    decoder, position = json.JSONDecoder(), 0
    calls: list[ToolCall] = []
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return calls, text[position:], True
        call = _as_call(value)
        if call is None:
            return calls, text[position:], False
        calls.append(call)
        rest = text[end:].lstrip()
        if not rest or rest == ";":
            return calls, rest, True
        if rest[0] != ";":
            return calls, rest, False
        position = text.index(";", end) + 1


def _partial_call(text: str, names: tuple[str, ...], strict: bool) -> ToolCall | None:
    """The call a cut JSON text had begun, with the arguments written so far, if its name is
    known: written whole, or the one function whose name starts with what was written. `strict`
    asks for the name and the arguments key, where the text might be JSON that is no call."""
    match = _CALL_HEAD.match(text)
    if match is not None:
        name, closed = match["name"], match["closed"] is not None
        arguments = text[match.end():] if match["key"] else ""
    elif _NAME_KEY.startswith(re.sub(r"\s+", "", text)):  # cut before the name began
        name, closed, arguments = "", False, ""
    else:
        return None
    if strict and not (closed and match is not None and match["key"]):
        return None
    try:  # a name cut inside an escape loses the escape's start
        name = json.loads('"' + name.removesuffix("\\") + '"')
    except json.JSONDecodeError:
        return None
    if not closed:
        begun = [n for n in names if n.startswith(name)]
        if len(begun) != 1:
            return None
        name = begun[0]
    return _new_call(name, arguments)


class StreamingToolCallParser:
    """Feeds on answer text deltas; returns (content delta, tool calls completed by this delta)."""

    def __init__(self, form: ToolFormat | None = None) -> None:
        self._form = form or ToolFormat()
        self._state = _TEXT if self._form.generic else _START
        self._held = ""
        self._after_call = False  # whitespace between and after calls is not content
        self._made = 0  # calls returned so far

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        self._held += text
        content: list[str] = []
        calls: list[ToolCall] = []
        while True:
            before = (self._state, len(self._held))
            if self._state == _START:
                self._start()
            elif self._state == _JSON:
                self._json(content, text)
            elif self._state == _TEXT:
                self._text(content)
            else:
                self._call(calls, content)
            if (self._state, len(self._held)) == before:
                self._made += len(calls)
                return "".join(content), calls

    def finish(self, cut: bool = False) -> tuple[str, list[ToolCall]]:
        """The rest at the end of the answer; `cut`: it ended at max_tokens."""
        content, calls = self.feed("")
        held, self._held = self._held, ""
        # Under Fleet's grammar a block of the generic format, like a forced answer, is a call.
        more, text = self._unfinished(held, cut or self._form.forced or self._form.generic)
        if self._form.forced:  # the grammar's own text: wrapper, never content
            if not more and not calls and not self._made:
                more = [c for c in [_partial_call("", self._form.names, False)] if c is not None]
            text = ""
        return content + text, calls + more

    def _unfinished(self, held: str, cut: bool) -> tuple[list[ToolCall], str]:
        """The calls in the text held at the end, and the text that is content after all."""
        if self._state == _JSON:
            body = held.strip().removeprefix(PYTHON_TAG)
            found, rest, _ = _leading_calls(body)
            if found and rest.strip() in ("", ";"):
                return found, ""
            partial = _partial_call(rest, self._form.names, not self._form.forced) if cut else None
            return (found + [partial], "") if partial is not None else ([], held)
        if self._state == _CALL:
            # The model ended without closing the block (or was cut inside the closing tag).
            body = held[:len(held) - pending_prefix_length(held, [CLOSE_TAG])]
            whole, _ = _json_calls(body)
            if whole:
                return whole, ""
            partial = _partial_call(body, self._form.names, False) if cut else None
            if partial is not None:
                return [partial], ""
            return [], "" if self._form.generic else OPEN_TAG + held
        return [], held

    def _start(self) -> None:
        """At the answer's start: a `{` or the python tag means a Llama-style JSON answer."""
        begun = self._held.lstrip()
        if not begun or (len(begun) < len(PYTHON_TAG) and PYTHON_TAG.startswith(begun)):
            return
        self._state = _JSON if begun[0] == "{" or begun.startswith(PYTHON_TAG) else _TEXT

    def _json(self, content: list[str], new_text: str) -> None:
        """Gives up on a JSON answer as soon as it is complete and not calls (checked at each `}`)."""
        if "}" not in new_text:
            return
        _, possible = _json_calls(self._held.strip().removeprefix(PYTHON_TAG))
        if not possible:  # an answer that merely starts with `{`: plain content after all
            content.append(self._held)
            self._held, self._state = "", _TEXT

    def _text(self, content: list[str]) -> None:
        if self._after_call:
            self._held = self._held.lstrip()
            self._after_call = not self._held
        start = self._held.find(OPEN_TAG)
        if start >= 0:
            content.append(self._held[:start])
            self._held, self._state = self._held[start + len(OPEN_TAG):], _CALL
            return
        keep = len(self._held) - pending_prefix_length(self._held, [OPEN_TAG])
        content.append(self._held[:keep])
        self._held = self._held[keep:]

    def _call(self, calls: list[ToolCall], content: list[str]) -> None:
        end = self._held.find(CLOSE_TAG)
        if end < 0:
            return
        body, self._held = self._held[:end], self._held[end + len(CLOSE_TAG):]
        found, _ = _json_calls(body)
        if found:
            calls.extend(found)
            self._after_call = True
        else:
            content.append(OPEN_TAG + body + CLOSE_TAG)
        self._state = _TEXT
