"""A choice's raw text deltas -> OpenAI choice objects, streamed (`feed`/`finish` give chunk
choices) and whole (`result` gives the final choice). Chat choices separate reasoning and tool
calls out of the text; completion choices are the text itself.

A choice that a stop string ended names it in `stop_reason`, as vLLM's server does (OpenAI has
no such field; its clients read past it): Anthropic's Messages answer must say which of the
client's `stop_sequences` it met (fleet.api.anthropic)."""

from __future__ import annotations

from typing import Any

from fleet.generation.reasoning import ReasoningSplitter
from fleet.generation.tool_calls import StreamingToolCallParser, ToolCall, ToolFormat


def _with_stop(choice: dict[str, Any], stop: str | None) -> dict[str, Any]:
    """The choice, with the stop string that ended it (only then: the field is an extension)."""
    if stop is not None:
        choice["stop_reason"] = stop
    return choice


def _tool_call_delta(position: int, call: ToolCall) -> dict[str, Any]:
    return {"index": position, "id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": call.arguments}}


class ChatChoice:
    def __init__(self, index: int, reasoning_tags: tuple[str, str, bool] | None = None,
                 tools: ToolFormat | None = None):
        """`tools`: how calls come in the answer, when they are to be parsed out of it."""
        self.index = index
        self._reasoning = ReasoningSplitter(*reasoning_tags) if reasoning_tags else None
        self._tools = StreamingToolCallParser(tools) if tools is not None else None
        self._content: list[str] = []
        self._thoughts: list[str] = []
        self._calls: list[ToolCall] = []
        self._logprobs: list[dict[str, Any]] | None = None
        self.finish_reason: str | None = None
        self.stop_reason: str | None = None

    def _split(self, text: str, final_reason: str | None = None) -> dict[str, Any]:
        thought = ""
        if self._reasoning is not None:
            thought, text = self._reasoning.feed(text)
            if final_reason is not None:
                more_thought, more_text = self._reasoning.finish()
                thought, text = thought + more_thought, text + more_text
        calls: list[ToolCall] = []
        if self._tools is not None:
            text, calls = self._tools.feed(text)
            if final_reason is not None:
                more_text, more_calls = self._tools.finish(cut=final_reason == "length")
                text, calls = text + more_text, calls + more_calls
        delta: dict[str, Any] = {}
        if text:
            delta["content"] = text
            self._content.append(text)
        if thought:
            delta["reasoning_content"] = thought
            self._thoughts.append(thought)
        if calls:
            delta["tool_calls"] = [_tool_call_delta(len(self._calls) + i, c) for i, c in enumerate(calls)]
            self._calls.extend(calls)
        return delta

    def feed(self, text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """A chunk choice for this delta, or None when it holds nothing to send yet."""
        delta = self._split(text)
        if logprobs:
            self._logprobs = (self._logprobs or []) + logprobs
        if not delta and not logprobs:
            return None
        return {"index": self.index, "delta": delta,
                "logprobs": {"content": logprobs} if logprobs else None, "finish_reason": None}

    def finish(self, reason: str, stop: str | None = None) -> dict[str, Any]:
        """The last chunk choice; `stop`: the stop string that ended the choice, if one did."""
        delta = self._split("", reason)
        # A call cut by max_tokens stays in tool_calls, and the reason stays "length".
        self.finish_reason = "tool_calls" if self._calls and reason == "stop" else reason
        self.stop_reason = stop
        return _with_stop({"index": self.index, "delta": delta, "logprobs": None,
                           "finish_reason": self.finish_reason}, stop)

    def result(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content)}
        if self._thoughts:
            message["reasoning_content"] = "".join(self._thoughts)
        if self._calls:
            message["tool_calls"] = [
                {k: v for k, v in _tool_call_delta(i, c).items() if k != "index"}
                for i, c in enumerate(self._calls)]
            message["content"] = message["content"] or None
        return _with_stop({"index": self.index, "message": message,
                           "finish_reason": self.finish_reason,
                           "logprobs": {"content": self._logprobs} if self._logprobs is not None
                           else None}, self.stop_reason)


def _completion_logprobs(entries: list[dict[str, Any]], offset: int) -> dict[str, Any]:
    """The legacy completions shape: parallel lists, top alternatives as {token: logprob}."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in entries],
        "text_offset": offsets,
    }


class CompletionChoice:
    def __init__(self, index: int):
        self.index = index
        self._text: list[str] = []
        self._entries: list[dict[str, Any]] | None = None
        self._length = 0
        self.finish_reason: str | None = None
        self.stop_reason: str | None = None

    def feed(self, text: str, logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        if not text and not logprobs:
            return None
        chunk_logprobs = None
        if logprobs:
            chunk_logprobs = _completion_logprobs(logprobs, self._length)
            self._entries = (self._entries or []) + logprobs
        self._text.append(text)
        self._length += len(text)
        return {"index": self.index, "text": text, "logprobs": chunk_logprobs, "finish_reason": None}

    def finish(self, reason: str, stop: str | None = None) -> dict[str, Any]:
        self.finish_reason, self.stop_reason = reason, stop
        return _with_stop({"index": self.index, "text": "", "logprobs": None,
                           "finish_reason": reason}, stop)

    def result(self) -> dict[str, Any]:
        logprobs = _completion_logprobs(self._entries, 0) if self._entries is not None else None
        return _with_stop({"index": self.index, "text": "".join(self._text), "logprobs": logprobs,
                           "finish_reason": self.finish_reason}, self.stop_reason)
