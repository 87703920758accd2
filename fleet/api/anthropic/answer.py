"""A chat answer (the replica's OpenAI choice and usage) -> Anthropic's Message object.

Blocks come in the order a model writes them: its thoughts (`thinking`), its text, its calls
(`tool_use`). A block with nothing in it is left out, as Anthropic leaves it out: an answer
that only calls a tool has no text block. The stop reason:
- `tool_use` when the answer calls tools (chat's "tool_calls");
- `max_tokens` when max_tokens cut it (chat's "length"), a call cut short included;
- `stop_sequence` when one of the request's `stop_sequences` ended it, named in
  `stop_sequence` (the replica reports the stop string it met: the choice's `stop_reason`; a
  stop string of the model's own family is the end of its turn);
- `end_turn` otherwise."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fleet.messages import Usage

MESSAGE_ID_PREFIX = "msg_"


def message_id() -> str:
    return MESSAGE_ID_PREFIX + uuid.uuid4().hex


def stop_reason(choice: dict[str, Any], stop_sequences: list[str] | None
                ) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a finished chat choice (a whole one, or the last chunk
    of a stream)."""
    reason = choice.get("finish_reason")
    if reason == "tool_calls":
        return "tool_use", None
    if reason == "length":
        return "max_tokens", None
    stop = choice.get("stop_reason")
    if stop is not None and stop_sequences and stop in stop_sequences:
        return "stop_sequence", stop
    return "end_turn", None


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    """Anthropic's usage. Its cache fields are 0: Fleet bills no cache (llama.cpp and vLLM
    reuse prefixes by themselves, and the prompt's tokens count in full)."""
    return {"input_tokens": input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def tool_input(arguments: str) -> dict[str, Any]:
    """A call's arguments (chat's JSON text) as the `input` object of a tool_use block. Only a
    call that max_tokens cut short has arguments that do not parse: its input is then empty
    (the stop reason, max_tokens, says why)."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def thinking_block(thought: str, omitted: bool) -> dict[str, Any]:
    """`omitted`: the client asked for thinking blocks without their text (display "omitted")."""
    return {"type": "thinking", "thinking": "" if omitted else thought, "signature": ""}


def tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "tool_use", "id": call["id"], "name": function.get("name", ""),
            "input": tool_input(function.get("arguments") or "")}


def content_blocks(message: dict[str, Any], omit_thinking: bool) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        blocks.append(thinking_block(message["reasoning_content"], omit_thinking))
    if message.get("content"):
        blocks.append({"type": "text", "text": message["content"]})
    blocks.extend(tool_use_block(call) for call in message.get("tool_calls") or ())
    return blocks


def message(model: str, choice: dict[str, Any], tokens: Usage,
            stop_sequences: list[str] | None, omit_thinking: bool = False) -> dict[str, Any]:
    """The whole answer: Anthropic's Message object."""
    reason, sequence = stop_reason(choice, stop_sequences)
    return {"id": message_id(), "type": "message", "role": "assistant", "model": model,
            "content": content_blocks(choice.get("message") or {}, omit_thinking),
            "stop_reason": reason, "stop_sequence": sequence,
            "usage": usage(tokens.prompt_tokens, tokens.completion_tokens)}
