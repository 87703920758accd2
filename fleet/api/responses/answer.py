"""A chat answer (the replica's OpenAI choice and usage) -> the Responses API's Response object.

Output items come in the order a model writes them: its thoughts (a `reasoning` item), its
text (a `message` item with one `output_text` part), its calls (one `function_call` item each).
An item with nothing in it is left out, as OpenAI leaves it out: an answer that only calls a
function has no message. The status is `incomplete` (reason "max_output_tokens") when
max_output_tokens cut the answer (chat's "length"), else `completed`. `output_text` is not
sent: OpenAI's SDKs compute it from the output items."""

from __future__ import annotations

import time
import uuid
from typing import Any

from fleet.api.protocol.openai_responses import ResponsesRequest
from fleet.messages import Usage

RESPONSE_ID_PREFIX = "resp_"


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The Responses usage. Its cache counts are 0: Fleet bills no cache (llama.cpp and vLLM
    reuse prefixes by themselves, and the prompt's tokens count in full); a reasoning model's
    thoughts are among its output tokens, not counted apart by the engines."""
    return {"input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens}


def status_of(finish_reason: str | None) -> tuple[str, dict[str, str] | None]:
    """(status, incomplete_details) of a finished chat choice."""
    if finish_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}
    return "completed", None


def reasoning_item(item_id: str, thought: str, summarized: bool, status: str) -> dict[str, Any]:
    """The thoughts as `reasoning_text` content (as OpenAI shows an open model's), and as the
    summary too when the request asked for one: Fleet's models write no separate summary."""
    return {"id": item_id, "type": "reasoning", "status": status,
            "summary": [{"type": "summary_text", "text": thought}] if summarized else [],
            "content": [{"type": "reasoning_text", "text": thought}]}


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str | None, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [] if text is None else [output_text(text)]}


def function_call_item(item_id: str, call: dict[str, Any], status: str) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call["id"],
            "name": function.get("name", ""), "arguments": function.get("arguments") or ""}


def output_items(message: dict[str, Any], summarized: bool, status: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if message.get("reasoning_content"):
        items.append(reasoning_item(new_id("rs_"), message["reasoning_content"], summarized,
                                    status))
    if message.get("content"):
        items.append(message_item(new_id("msg_"), message["content"], status))
    items.extend(function_call_item(new_id("fc_"), call, status)
                 for call in message.get("tool_calls") or ())
    return items


def summarized(body: ResponsesRequest) -> bool:
    """Whether the request asked for a summary of the thoughts."""
    reasoning = body.reasoning
    return reasoning is not None and bool(reasoning.summary or reasoning.generate_summary)


def response_object(body: ResponsesRequest, response_id: str, created_at: int, status: str,
                    output: list[dict[str, Any]], tokens: dict[str, Any] | None,
                    incomplete: dict[str, str] | None = None) -> dict[str, Any]:
    """A Response object: what the request asked for echoed, as OpenAI echoes it, around the
    output items."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": None, "incomplete_details": incomplete,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "model": body.model, "output": output,
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "previous_response_id": body.previous_response_id,
        "reasoning": body.reasoning.model_dump() if body.reasoning else {
            "effort": None, "summary": None},
        "store": body.store is not False, "temperature": body.temperature,
        "text": {"format": body.text.format.model_dump(by_alias=True, exclude_none=True)
                 if body.text and body.text.format else {"type": "text"}},
        "tool_choice": _tool_choice(body), "tools": [
            tool.model_dump(exclude_none=True) for tool in body.tools or ()],
        "top_p": body.top_p, "truncation": "disabled", "usage": tokens,
        "user": body.user, "metadata": body.metadata or {},
    }


def _tool_choice(body: ResponsesRequest) -> Any:
    choice = body.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump()


def response(body: ResponsesRequest, choice: dict[str, Any], tokens: Usage) -> dict[str, Any]:
    """The whole answer."""
    status, incomplete = status_of(choice.get("finish_reason"))
    items = output_items(choice.get("message") or {}, summarized(body), status)
    return response_object(body, new_id(RESPONSE_ID_PREFIX), int(time.time()), status, items,
                           usage(tokens.prompt_tokens, tokens.completion_tokens), incomplete)
