"""How a chat request's tools reach the model, and how its calls are read back.

A family whose chat template renders tools (the family's `tools` ability) gets them through its
template, and its answers are read in the formats fleet.generation.tool_calls knows.

Any other chat model gets Fleet's generic format:
- the functions are described in a section of the system prompt written here, with how to call
  one: a `<tool_call>` block around the call's JSON, the format of the Hermes/Qwen families;
- earlier calls and their results in the conversation are written as text in the same format,
  since a template without tools has no place for them (and may refuse a `tool` message);
- the grammar (kind "tool_calls" of fleet.generation.structured) lets the answer be either plain
  text without a block or calls valid against their schemas, so a model never trained for calls
  can only make calls that parse; a forced call (tool_choice "required" or named) is a block too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fleet.generation.chat_template import normalize_messages
from fleet.generation.structured import Constraint, forced_tools, tools_offered
from fleet.generation.tool_calls import CLOSE_TAG, OPEN_TAG, ToolFormat
from fleet.messages import GenerationCall

# Written for small models: the functions between tags, the exact block to write, the way out.
# After the system prompt the client wrote, if any, so it speaks of functions only, not of who
# the assistant is.
INSTRUCTIONS = """\
You can call functions. They are listed between <tools> and </tools>, one JSON object each:
<tools>
{functions}
</tools>
To call a function, write a JSON object with its "name" and its "arguments" (an object of its \
parameters) between <tool_call> and </tool_call>, like this:
{example}
The result of the call comes back in the next message. When no function is needed, answer in \
plain text."""
# The arguments are left out: a model copies an example, and SmolLM2-135M copied
# `{"argument name": "value"}` into calls, and `<the customer's name>`-like placeholders into
# its values. `{...}` is no JSON, so the grammar stops a copy at once.
EXAMPLE = f'{OPEN_TAG}\n{{"name": "function name", "arguments": {{...}}}}\n{CLOSE_TAG}'


@dataclass(frozen=True)
class ChatInput:
    """What the chat template renders, and how calls are read from the answer (None: not read)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    tool_format: ToolFormat | None


def call_block(name: str, arguments: Any) -> str:
    """A call in the generic format, as the grammar makes the model write it."""
    call = json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
    return f"{OPEN_TAG}\n{call}\n{CLOSE_TAG}"


def chat_input(call: GenerationCall, native: bool, constraint: Constraint | None) -> ChatInput:
    """`native`: the family's template renders tools; `constraint`: the request's grammar
    (fleet.generation.structured.constraint_of, with generic_tools = not native)."""
    messages = call.messages or []
    forced = forced_tools(call)
    callable_ = forced if forced is not None else [t["function"] for t in call.tools or []]
    form = ToolFormat(tuple(f["name"] for f in callable_), forced=forced is not None,
                      generic=not native)
    if native:
        offered = tools_offered(call)
        return ChatInput(messages, call.tools if offered else None, form if offered else None)
    if any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
        messages = history_as_text(messages)
    if constraint is None or constraint.kind != "tool_calls":
        # No tools, tool_choice "none", or another field's grammar, which leaves no room for a call.
        return ChatInput(messages, None, None)
    return ChatInput(with_functions_described(messages, callable_), None, form)


def with_functions_described(messages: list[dict[str, Any]],
                             functions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with the generic format's section at the end of the system prompt."""
    listed = "\n".join(json.dumps(f, ensure_ascii=False) for f in functions)
    section = INSTRUCTIONS.format(functions=listed,
                                  example=EXAMPLE)
    messages = normalize_messages(messages)
    if messages[0]["role"] == "system":
        first = messages[0]
        return [{**first, "content": f"{first['content']}\n\n{section}".lstrip()}, *messages[1:]]
    return [{"role": "system", "content": section}, *messages]


def history_as_text(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls and results as text in the generic format: an assistant message's calls become
    blocks after its text, and tool results become user messages, several results (and a user
    message right after them) merged into one, so turns still alternate."""
    converted: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # a call's id -> its function, for the result's label
    results_last = False  # whether converted[-1] holds tool results
    # A user's message with images keeps its parts, and its own turn.
    for message in normalize_messages(messages):
        role = message["role"]
        if role == "assistant" and message.get("tool_calls"):
            converted.append(_calls_as_text(message, names))
        elif role == "tool" or (role == "user" and results_last
                                and isinstance(message["content"], str)):
            text = _result_text(message, names) if role == "tool" else message["content"]
            if results_last:
                previous = converted[-1]
                converted[-1] = {**previous, "content": f"{previous['content']}\n{text}"}
            else:
                converted.append({"role": "user", "content": text})
            results_last = role == "tool"
            continue
        else:
            converted.append(message)
        results_last = False
    return converted


def _calls_as_text(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    blocks = []
    for call in message["tool_calls"]:
        function = call.get("function") or {}
        names[str(call.get("id"))] = str(function.get("name", ""))
        blocks.append(call_block(function.get("name", ""), function.get("arguments", {})))
    text = "\n".join([message["content"], *blocks] if message["content"] else blocks)
    return {k: v for k, v in message.items() if k != "tool_calls"} | {"content": text}


def _result_text(message: dict[str, Any], names: dict[str, str]) -> str:
    """A result as a plain line. Written as a tagged block like the call's, it drew SmolLM2-135M
    (greedy) into answering with such a block instead of the call the conversation asked for."""
    name = message.get("name") or names.get(str(message.get("tool_call_id")), "")
    return f"Result of {name}: {message['content']}" if name else f"Result: {message['content']}"
