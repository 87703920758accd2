"""A Messages request -> the chat request that runs it (fleet.api.protocol.generation), so that
both APIs share one path: the same checks and limits, templates, grammars, tool formats and
reasoning splitter. What maps where:

- `system` (a string or text blocks) -> a leading system message; a block list's texts, like a
  message's, are joined with newlines (blocks are paragraphs: glued together, their sentences
  would run into each other).
- a user turn's `tool_result` blocks -> `tool` messages, ahead of the turn's text: chat
  templates want a call's result right after the call. An `is_error` result says so.
- an assistant turn's `tool_use` blocks -> its `tool_calls`; `thinking` -> its
  `reasoning_content` (the templates of reasoning models read it).
- `tools` -> functions; `tool_choice` auto/any/tool/none -> "auto"/"required"/named/"none",
  so that `any` and `tool` are forced through the grammar; `disable_parallel_tool_use` ->
  `parallel_tool_calls` (Fleet's default when absent: a model not trained for calls and left
  free to go on tends to call again until max_tokens).
- `output_config.format` (or the beta's `output_format`) -> response_format json_schema.
- `thinking` enabled/disabled -> the template's `enable_thinking`; adaptive leaves the
  template's default.
- `stop_sequences` -> stop; max_tokens and the sampling fields keep their names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fleet.api.protocol.anthropic import (
    AssistantMessage,
    CountTokensRequest,
    ImageBlock,
    Message,
    MessagesRequest,
    TextBlock,
    ThinkingBlock,
    ThinkingDisabled,
    ThinkingEnabled,
    ToolChoice,
    ToolChoiceAny,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from fleet.api.protocol.generation import ChatCompletionRequest
from fleet.errors import BadRequest

_SAMPLING = ("max_tokens", "temperature", "top_p", "top_k")
OUTPUT_FORMAT_NAME = "output"  # response_format's json_schema needs a name; Anthropic's has none


def chat_request(body: MessagesRequest | CountTokensRequest) -> ChatCompletionRequest:
    """The chat request that answers (or, for count_tokens, would answer) `body`: validated as
    any chat request is, so its cross-field checks (a forced tool among the tools, one
    constraint at a time) and limits hold here too."""
    fields: dict[str, Any] = {"model": body.model, "messages": _messages(body)}
    if body.tools is not None:
        fields["tools"] = [_function(tool.name, tool.description, tool.input_schema)
                           for tool in body.tools]
    if body.tool_choice is not None:
        fields.update(_tool_choice(body.tool_choice))
    schema = body.output_schema
    if schema is not None:
        fields["response_format"] = {"type": "json_schema", "json_schema": {
            "name": OUTPUT_FORMAT_NAME, "schema": schema}}
    if isinstance(body.thinking, ThinkingEnabled | ThinkingDisabled):
        fields["chat_template_kwargs"] = {"enable_thinking": isinstance(body.thinking,
                                                                        ThinkingEnabled)}
    if isinstance(body, MessagesRequest):
        fields.update({name: getattr(body, name) for name in _SAMPLING
                       if getattr(body, name) is not None})
        if body.stop_sequences:
            fields["stop"] = body.stop_sequences
    return ChatCompletionRequest.model_validate(fields)


def _function(name: str, description: str | None, schema: dict[str, Any]) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name, "parameters": schema}
    if description is not None:
        function["description"] = description
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice) -> dict[str, Any]:
    if isinstance(choice, ToolChoiceNone):
        return {"tool_choice": "none"}
    fields: dict[str, Any] = {"tool_choice": (
        {"type": "function", "function": {"name": choice.name}}
        if isinstance(choice, ToolChoiceTool)
        else "required" if isinstance(choice, ToolChoiceAny) else "auto")}
    if choice.disable_parallel_tool_use is not None:
        fields["parallel_tool_calls"] = not choice.disable_parallel_tool_use
    return fields


def _messages(body: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.system:
        messages.append({"role": "system", "content": _text(body.system)})
    for index, message in enumerate(body.messages):
        messages.extend(_turn(message, f"messages.{index}"))
    return messages


def _text(content: str | list[TextBlock]) -> str:
    return content if isinstance(content, str) else "\n".join(block.text for block in content)


def _turn(message: Message, where: str) -> list[dict[str, Any]]:
    """One Anthropic turn as chat messages: usually one, more for a user's tool results."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if isinstance(message, AssistantMessage):
        return [_assistant(message)]
    results = [_tool_result(block, f"{where}.content.{position}")
               for position, block in enumerate(message.content)
               if isinstance(block, ToolResultBlock)]
    content = _user_content(message.content)
    if content or not results:
        results.append({"role": message.role, "content": content})
    return results


def _assistant(message: AssistantMessage) -> dict[str, Any]:
    blocks = message.content
    assert isinstance(blocks, list)  # a string content is its own message (_turn)
    turn: dict[str, Any] = {"role": "assistant", "content": "\n".join(
        block.text for block in blocks if isinstance(block, TextBlock))}
    thoughts = [block.thinking for block in blocks if isinstance(block, ThinkingBlock)]
    if thoughts:
        turn["reasoning_content"] = "\n".join(thoughts)
    calls = [{"id": block.id, "type": "function", "function": {
        "name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}}
        for block in blocks if isinstance(block, ToolUseBlock)]
    if calls:
        turn["tool_calls"] = calls
    return turn


def _tool_result(block: ToolResultBlock, where: str) -> dict[str, Any]:
    if isinstance(block.content, str):
        text = block.content
    else:
        for position, part in enumerate(block.content):
            if isinstance(part, ImageBlock):
                # Chat templates write a tool's result as text, and no model's template here
                # places an image inside one.
                raise BadRequest(f"{where}.content.{position}: an image in a tool_result is not "
                                 "supported; send it in the user turn's content",
                                 code="unsupported_content")
        text = "\n".join(part.text for part in block.content if isinstance(part, TextBlock))
    if block.is_error:
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}


def _user_content(blocks: Sequence[Any]) -> str | list[dict[str, Any]]:
    """A user turn's text (its text blocks, as paragraphs), or, with images among them, chat
    parts in the blocks' order: the images' places in the turn are the model's to read."""
    if not any(isinstance(block, ImageBlock) for block in blocks):
        return "\n".join(block.text for block in blocks if isinstance(block, TextBlock))
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ImageBlock):
            parts.append(block.chat_part())
        elif isinstance(block, TextBlock):
            if parts and parts[-1]["type"] == "text":
                parts[-1] = {"type": "text", "text": f"{parts[-1]['text']}\n{block.text}"}
            else:
                parts.append({"type": "text", "text": block.text})
    return parts
