"""A chat stream's chunk choices -> the Responses API's server-sent events, each `event: TYPE`
and `data: JSON` whose `type` is the same and whose `sequence_number` counts from 0:

    response.created, response.in_progress,
    per output item: response.output_item.added, then
      a message: response.content_part.added, response.output_text.delta...,
                 response.output_text.done, response.content_part.done
      thoughts:  response.reasoning_text.delta..., response.reasoning_text.done (and the
                 summary's part and text events when the request asked for a summary)
      a call:    response.function_call_arguments.delta, response.function_call_arguments.done
    response.output_item.done,
    response.completed (response.incomplete when max_output_tokens cut the answer)

An item opens with the first delta of its kind and closes when another kind begins. A call
arrives whole from the replica's parser (fleet.generation.tool_calls), so its arguments come in
one delta. An error after the headers is an `error` event, and the stream ends there. The
events of one frame leave as one write. The whole Response is assembled on the way, for the
last event and for the store (`finished`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from fleet.api.protocol.openai_responses import ResponsesRequest
from fleet.api.responses import answer
from fleet.api.streams import ChatChunkReader
from fleet.messages import Usage


class ResponseEvents(ChatChunkReader):
    """The events of one streamed response (fleet.api.streams.StreamDialect). `finished` is
    called with the whole Response once the stream has ended well."""

    def __init__(self, body: ResponsesRequest, prompt_tokens: int,
                 finished: Callable[[dict[str, Any]], None] | None = None):
        self._body = body
        self._prompt_tokens = prompt_tokens
        self._finished = finished
        self._id = answer.new_id(answer.RESPONSE_ID_PREFIX)
        self._created_at = int(time.time())
        self._summarized = answer.summarized(body)
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._open: str | None = None  # the kind of the item still open: "text" or "reasoning"
        self._text: list[str] = []  # what the open item has said so far
        self._finish_reason: str | None = None

    def opening(self) -> list[bytes]:
        snapshot = self._snapshot("in_progress", None)
        return [self._event("response.created", response=snapshot)
                + self._event("response.in_progress", response=snapshot)]

    def thought(self, events: list[bytes], text: str) -> None:
        self._delta(events, "reasoning", text)

    def text(self, events: list[bytes], text: str) -> None:
        self._delta(events, "text", text)

    def tool_call(self, events: list[bytes], call: dict[str, Any]) -> None:
        self._function_call(events, call)

    def finished(self, choice: dict[str, Any]) -> None:
        self._finish_reason = choice["finish_reason"]

    def closing(self, tokens: Usage | None) -> list[bytes]:
        events: list[bytes] = []
        self._close(events)
        status, incomplete = answer.status_of(self._finish_reason)
        output = tokens.completion_tokens if tokens is not None else 0
        whole = self._snapshot(status, answer.usage(self._prompt_tokens, output), incomplete)
        name = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self._event(name, response=whole))
        if self._finished is not None:
            self._finished(whole)
        return [b"".join(events)]

    def failure(self, status: int, error: dict[str, Any]) -> list[bytes]:
        return [self._event("error", code=error.get("code"), message=error["message"],
                            param=error.get("param"))]

    # ---- events ----------------------------------------------------------------------------
    def _event(self, kind: str, **fields: Any) -> bytes:
        data = orjson.dumps({"type": kind, "sequence_number": self._sequence, **fields})
        self._sequence += 1
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"

    def _snapshot(self, status: str, tokens: dict[str, Any] | None,
                  incomplete: dict[str, str] | None = None) -> dict[str, Any]:
        return answer.response_object(self._body, self._id, self._created_at, status,
                                      list(self._output), tokens, incomplete)

    def _delta(self, events: list[bytes], kind: str, text: str) -> None:
        if self._open != kind:
            self._close(events)
            self._start(events, kind)
        self._text.append(text)
        index = len(self._output) - 1
        item_id = self._output[index]["id"]
        if kind == "text":
            events.append(self._event("response.output_text.delta", item_id=item_id,
                                      output_index=index, content_index=0, delta=text,
                                      logprobs=[]))
        else:
            events.append(self._event("response.reasoning_text.delta", item_id=item_id,
                                      output_index=index, content_index=0, delta=text))

    def _start(self, events: list[bytes], kind: str) -> None:
        index = len(self._output)
        if kind == "text":
            item = answer.message_item(answer.new_id("msg_"), None, "in_progress")
        else:
            item = {"id": answer.new_id("rs_"), "type": "reasoning", "status": "in_progress",
                    "summary": [], "content": []}
        self._output.append(item)
        events.append(self._event("response.output_item.added", output_index=index, item=item))
        if kind == "text":
            events.append(self._event("response.content_part.added", item_id=item["id"],
                                      output_index=index, content_index=0,
                                      part=answer.output_text("")))
        self._open, self._text = kind, []

    def _close(self, events: list[bytes]) -> None:
        if self._open is None:
            return
        index = len(self._output) - 1
        item_id = self._output[index]["id"]
        text = "".join(self._text)
        if self._open == "text":
            part = answer.output_text(text)
            events.append(self._event("response.output_text.done", item_id=item_id,
                                      output_index=index, content_index=0, text=text,
                                      logprobs=[]))
            events.append(self._event("response.content_part.done", item_id=item_id,
                                      output_index=index, content_index=0, part=part))
            item = answer.message_item(item_id, text, "completed")
        else:
            events.append(self._event("response.reasoning_text.done", item_id=item_id,
                                      output_index=index, content_index=0, text=text))
            if self._summarized:
                self._summary(events, item_id, index, text)
            item = answer.reasoning_item(item_id, text, self._summarized, "completed")
        self._output[index] = item
        events.append(self._event("response.output_item.done", output_index=index, item=item))
        self._open = None

    def _summary(self, events: list[bytes], item_id: str, index: int, text: str) -> None:
        where = {"item_id": item_id, "output_index": index, "summary_index": 0}
        events.append(self._event("response.reasoning_summary_part.added", **where,
                                  part={"type": "summary_text", "text": ""}))
        events.append(self._event("response.reasoning_summary_text.delta", **where, delta=text))
        events.append(self._event("response.reasoning_summary_text.done", **where, text=text))
        events.append(self._event("response.reasoning_summary_part.done", **where,
                                  part={"type": "summary_text", "text": text}))

    def _function_call(self, events: list[bytes], call: dict[str, Any]) -> None:
        self._close(events)
        index = len(self._output)
        item = answer.function_call_item(answer.new_id("fc_"), call, "in_progress")
        arguments = item["arguments"]
        events.append(self._event("response.output_item.added", output_index=index,
                                  item={**item, "arguments": ""}))
        self._output.append(item)
        where = {"item_id": item["id"], "output_index": index}
        if arguments:
            events.append(self._event("response.function_call_arguments.delta", **where,
                                      delta=arguments))
        events.append(self._event("response.function_call_arguments.done", **where,
                                  name=item["name"], arguments=arguments))
        item = {**item, "status": "completed"}
        self._output[index] = item
        events.append(self._event("response.output_item.done", output_index=index, item=item))
