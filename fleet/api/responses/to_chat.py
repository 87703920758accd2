"""A Responses request -> the chat request that runs it (fleet.api.protocol.generation), so that
both APIs share one path: the same checks and limits, templates, grammars, tool formats and
reasoning splitter. What maps where:

- `instructions` -> a leading system message (they do not carry over to a later response:
  `previous_response_id` brings the earlier turns, not their instructions, as on OpenAI).
- the earlier turns of a stored conversation (`history`) -> the messages before `input`'s.
- message items: user/assistant/system keep their role, developer is system; their text parts
  are joined with newlines (parts are paragraphs).
- `function_call` items -> the `tool_calls` of one assistant message (consecutive calls and the
  text before them are one turn, as a model wrote them); `function_call_output` -> a `tool`
  message; `reasoning` items -> the next assistant turn's `reasoning_content`.
- `tools` -> functions; `tool_choice` as chat's, so that "required" and a named function are
  forced through the grammar; `parallel_tool_calls` as chat's.
- `text.format` json_object / json_schema -> response_format.
- `reasoning.effort` "none" -> the template's `enable_thinking` off; another effort -> on.
- `max_output_tokens` -> max_tokens; temperature and top_p keep their names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fleet.api.protocol.generation import ChatCompletionRequest
from fleet.api.protocol.openai_responses import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    JsonObjectFormat,
    JsonSchemaFormat,
    MessageItem,
    ReasoningItem,
    Refusal,
    ResponsesRequest,
    ToolChoiceFunction,
)
from fleet.errors import BadRequest

_ROLES = {"developer": "system"}


def chat_request(body: ResponsesRequest, history: Sequence[Any] = ()) -> ChatCompletionRequest:
    """The chat request that answers `body` after the items of `history` (the earlier turns of
    its conversation, typed as input items): validated as any chat request is, so its
    cross-field checks (a forced tool among the tools, one constraint at a time) and limits
    hold here too."""
    fields: dict[str, Any] = {"model": body.model, "messages": chat_messages(body, history)}
    if body.tools is not None:
        fields["tools"] = [_function(tool.model_dump(exclude_none=True, exclude={"type"}))
                           for tool in body.tools]
    if body.tool_choice is not None:
        fields["tool_choice"] = (
            {"type": "function", "function": {"name": body.tool_choice.name}}
            if isinstance(body.tool_choice, ToolChoiceFunction) else body.tool_choice)
    if body.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = body.parallel_tool_calls
    response_format = _response_format(body)
    if response_format is not None:
        fields["response_format"] = response_format
    if body.reasoning is not None and body.reasoning.effort is not None:
        fields["chat_template_kwargs"] = {"enable_thinking": body.reasoning.effort != "none"}
    if body.max_output_tokens is not None:
        fields["max_tokens"] = body.max_output_tokens
    for name in ("temperature", "top_p"):
        if getattr(body, name) is not None:
            fields[name] = getattr(body, name)
    return ChatCompletionRequest.model_validate(fields)


def _function(tool: dict[str, Any]) -> dict[str, Any]:
    # `strict` rides along as chat's function field; the grammar holds every call to its
    # schema either way.
    return {"type": "function", "function": tool}


def _response_format(body: ResponsesRequest) -> dict[str, Any] | None:
    form = body.text.format if body.text is not None else None
    if isinstance(form, JsonObjectFormat):
        return {"type": "json_object"}
    if isinstance(form, JsonSchemaFormat):
        schema: dict[str, Any] = {"name": form.name, "schema": form.json_schema}
        if form.strict is not None:
            schema["strict"] = form.strict
        return {"type": "json_schema", "json_schema": schema}
    return None


def chat_messages(body: ResponsesRequest, history: Sequence[Any] = ()) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    turns = _Turns()
    for index, item in enumerate(history):
        turns.add(item, f"previous_response_id: item {index}")
    for index, item in enumerate(body.input_items):
        turns.add(item, f"input.{index}")
    messages.extend(turns.messages)
    return messages


class _Turns:
    """Items -> chat messages, one at a time: calls join the assistant turn they follow, and
    thoughts wait for the assistant turn they belong to."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._thoughts: list[str] = []
        self._open_assistant: dict[str, Any] | None = None  # the turn calls may still join

    def add(self, item: Any, where: str) -> None:
        if isinstance(item, ReasoningItem):
            self._thoughts.extend(self._thought_texts(item))
        elif isinstance(item, FunctionCallItem):
            self._call(item)
        elif isinstance(item, FunctionCallOutputItem):
            output = (item.output if isinstance(item.output, str)
                      else _text(item.output, f"{where}.output"))
            self._append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        else:
            self._message(item, where)

    @staticmethod
    def _thought_texts(item: ReasoningItem) -> list[str]:
        if item.content:
            return [part.text for part in item.content]
        return [part.text for part in item.summary]

    def _message(self, item: MessageItem, where: str) -> None:
        content = (item.content if isinstance(item.content, str)
                   else _content(item.content, f"{where}.content"))
        turn: dict[str, Any] = {"role": _ROLES.get(item.role, item.role), "content": content}
        if item.role == "assistant":
            self._with_thoughts(turn)
            self._append(turn)
            self._open_assistant = turn
        else:
            self._append(turn)

    def _call(self, item: FunctionCallItem) -> None:
        call = {"id": item.call_id, "type": "function",
                "function": {"name": item.name, "arguments": item.arguments}}
        turn = self._open_assistant
        if turn is None:
            turn = {"role": "assistant", "content": ""}
            self._with_thoughts(turn)
            self._append(turn)
            self._open_assistant = turn
        turn.setdefault("tool_calls", []).append(call)

    def _with_thoughts(self, turn: dict[str, Any]) -> None:
        if self._thoughts:
            turn["reasoning_content"] = "\n".join(self._thoughts)
            self._thoughts = []

    def _append(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._open_assistant = None


def _text(parts: Sequence[Any], where: str) -> str:
    """The text of parts where only text is read (a function call's output: templates write a
    tool's result as text); an image or a file among them is refused, naming its place."""
    texts: list[str] = []
    for position, part in enumerate(parts):
        if isinstance(part, InputImage):
            raise BadRequest(f"{where}.{position}: an input_image is read in a message's "
                             "content only", code="unsupported_content")
        _refuse_file(part, f"{where}.{position}")
        texts.append(part.refusal if isinstance(part, Refusal) else part.text)
    return "\n".join(texts)


def _content(parts: Sequence[Any], where: str) -> str | list[dict[str, Any]]:
    """A message's text (its parts, as paragraphs), or, with images among them, chat parts in
    their order (OpenAI's `image_url`, read and checked by fleet.api.chat_images)."""
    if not any(isinstance(part, InputImage) for part in parts):
        return _text(parts, where)
    chat_parts: list[dict[str, Any]] = []
    for position, part in enumerate(parts):
        _refuse_file(part, f"{where}.{position}")
        if isinstance(part, InputImage):
            chat_parts.append(part.chat_part(f"{where}.{position}"))
            continue
        text = part.refusal if isinstance(part, Refusal) else part.text
        if chat_parts and chat_parts[-1]["type"] == "text":
            chat_parts[-1] = {"type": "text", "text": f"{chat_parts[-1]['text']}\n{text}"}
        else:
            chat_parts.append({"type": "text", "text": text})
    return chat_parts


def _refuse_file(part: Any, where: str) -> None:
    if isinstance(part, InputFile):
        raise BadRequest(f"{where}: input_file is not supported: Fleet keeps no files; send the "
                         "file's text as input_text", code="unsupported_parameter")
