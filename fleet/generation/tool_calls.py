"""Tool calls out of a model's streamed answer, turned into OpenAI `tool_calls`.

Two formats cover the open chat models Fleet serves:
- Qwen2.5/Qwen3/Hermes wrap each call in `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`;
  text around the blocks is ordinary content.
- Llama 3.1/3.2 answer with nothing but a JSON object `{"name": ..., "parameters": {...}}`
  (several joined by `;`), maybe after `<|python_tag|>`. Such an answer is held back until it
  is known to be a call or not, then sent as calls or, if it was not one, as content.
Text is never lost: a block that does not parse is sent as content.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from fleet.generation.stops import pending_prefix_length

OPEN_TAG, CLOSE_TAG, PYTHON_TAG = "<tool_call>", "</tool_call>", "<|python_tag|>"
_START, _TEXT, _CALL, _JSON = "start", "text", "call", "json"


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


def _as_call(value: Any) -> ToolCall | None:
    """A ToolCall when `value` is {"name": str, "arguments"/"parameters": ...}, else None."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", value.get("parameters"))
    if arguments is None and not ({"arguments", "parameters"} & value.keys()):
        return None
    if not isinstance(arguments, str):
        arguments = json.dumps({} if arguments is None else arguments, ensure_ascii=False)
    return ToolCall(id="call_" + uuid.uuid4().hex[:24], name=value["name"], arguments=arguments)


def _json_calls(text: str) -> tuple[list[ToolCall] | None, bool]:
    """Parses `{call}; {call}...`: (the calls or None, whether more text could still make it calls)."""
    decoder, calls, position = json.JSONDecoder(), [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return None, True
        call = _as_call(value)
        if call is None:
            return None, False
        calls.append(call)
        rest = text[position:].lstrip()
        if not rest or rest == ";":
            return calls, True
        if rest[0] != ";":
            return None, False
        position = text.index(";", position) + 1


class StreamingToolCallParser:
    """Feeds on answer text deltas; returns (content delta, tool calls completed by this delta)."""

    def __init__(self) -> None:
        self._state = _START
        self._held = ""
        self._after_call = False  # whitespace between and after calls is not content

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
                return "".join(content), calls

    def finish(self) -> tuple[str, list[ToolCall]]:
        content, calls = self.feed("")
        held, self._held = self._held, ""
        if self._state == _JSON:
            found, _ = _json_calls(held.strip().removeprefix(PYTHON_TAG))
            return (content, calls + found) if found else (content + held, calls)
        if self._state == _CALL:
            found, _ = _json_calls(held)  # the model ended without closing the block
            if found:
                return content, calls + found
            return content + OPEN_TAG + held, calls
        return content + held, calls

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
