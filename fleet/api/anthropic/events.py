"""A chat stream's chunk choices -> Anthropic's server-sent events, each `event: NAME` and
`data: JSON`, in Anthropic's order:

    message_start, ping,
    (content_block_start, content_block_delta..., content_block_stop) per block,
    message_delta (stop_reason, stop_sequence, usage), message_stop

A block opens with the first delta of its kind and closes when another kind begins: thoughts
(`thinking_delta`) and text (`text_delta`) stream as they come; a tool call arrives whole from
the replica's parser (fleet.generation.tool_calls), so its block carries its input in one
`input_json_delta`. An error after the headers is an `error` event, and the stream ends there.
The events of one frame leave as one write (fewer sends than one per event)."""

from __future__ import annotations

from typing import Any

import orjson

from fleet.api.anthropic.answer import message_id, stop_reason, usage
from fleet.api.anthropic.errors import error_body
from fleet.api.streams import ChatChunkReader
from fleet.messages import Usage

_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


class MessageEvents(ChatChunkReader):
    """The events of one streamed Messages answer (fleet.api.streams.StreamDialect)."""

    def __init__(self, model: str, prompt_tokens: int, stop_sequences: list[str] | None,
                 omit_thinking: bool = False):
        self._model = model
        self._prompt_tokens = prompt_tokens
        self._stop_sequences = stop_sequences
        self._omit_thinking = omit_thinking
        self._index = -1  # the block last opened
        self._open: str | None = None  # its kind while it is open: "text" or "thinking"
        self._reason: tuple[str, str | None] = ("end_turn", None)

    def opening(self) -> list[bytes]:
        return [event("message_start", {"type": "message_start", "message": {
            "id": message_id(), "type": "message", "role": "assistant", "model": self._model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": usage(self._prompt_tokens, 0)}}), _PING]

    def thought(self, events: list[bytes], text: str) -> None:
        self._delta(events, "thinking", {"type": "thinking_delta", "thinking": text})

    def text(self, events: list[bytes], text: str) -> None:
        self._delta(events, "text", {"type": "text_delta", "text": text})

    def tool_call(self, events: list[bytes], call: dict[str, Any]) -> None:
        self._tool_use(events, call)

    def finished(self, choice: dict[str, Any]) -> None:
        self._reason = stop_reason(choice, self._stop_sequences)

    def closing(self, tokens: Usage | None) -> list[bytes]:
        events: list[bytes] = []
        self._close(events)
        reason, sequence = self._reason
        output = tokens.completion_tokens if tokens is not None else 0
        events.append(event("message_delta", {
            "type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
            "usage": usage(self._prompt_tokens, output)}))
        events.append(_STOP)
        return [b"".join(events)]

    @staticmethod
    def failure(status: int, error: dict[str, Any]) -> list[bytes]:
        return [event("error", error_body(status, error["message"]))]

    # ---- blocks --------------------------------------------------------------------------
    def _delta(self, events: list[bytes], kind: str, delta: dict[str, Any]) -> None:
        if self._open != kind:
            self._close(events)
            self._start(events, {"type": "text", "text": ""} if kind == "text"
                        else {"type": "thinking", "thinking": "", "signature": ""})
            self._open = kind
        if kind == "thinking" and self._omit_thinking:
            return  # the block says there were thoughts; their text is not sent
        events.append(event("content_block_delta", {"type": "content_block_delta",
                                                    "index": self._index, "delta": delta}))

    def _tool_use(self, events: list[bytes], call: dict[str, Any]) -> None:
        self._close(events)
        function = call.get("function") or {}
        self._start(events, {"type": "tool_use", "id": call["id"],
                             "name": function.get("name", ""), "input": {}})
        arguments = function.get("arguments") or ""
        if arguments:
            events.append(event("content_block_delta", {
                "type": "content_block_delta", "index": self._index,
                "delta": {"type": "input_json_delta", "partial_json": arguments}}))
        events.append(self._stop_event())

    def _start(self, events: list[bytes], block: dict[str, Any]) -> None:
        self._index += 1
        events.append(event("content_block_start", {"type": "content_block_start",
                                                    "index": self._index,
                                                    "content_block": block}))

    def _close(self, events: list[bytes]) -> None:
        if self._open is not None:
            events.append(self._stop_event())
            self._open = None

    def _stop_event(self) -> bytes:
        return event("content_block_stop", {"type": "content_block_stop", "index": self._index})
