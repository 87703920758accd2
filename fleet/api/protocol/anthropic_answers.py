"""What the Messages routes answer, as pydantic models: for the OpenAPI document
(fleet.api.openapi) and the tests that hold the answers to it. The routes write their JSON
themselves (fleet.api.anthropic), so these models describe and validate nothing at run time."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

AnthropicErrorType = Literal[
    "invalid_request_error", "authentication_error", "permission_error", "not_found_error",
    "request_too_large", "rate_limit_error", "api_error", "overloaded_error"]


class AnthropicErrorDetail(BaseModel):
    type: AnthropicErrorType
    message: str


class AnthropicErrorResponse(BaseModel):
    """Every error of the Messages routes (and the `error` event of their streams)."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class AnthropicTextContent(BaseModel):
    type: Literal["text"]
    text: str


class AnthropicThinkingContent(BaseModel):
    type: Literal["thinking"]
    thinking: str
    signature: str


class AnthropicToolUseContent(BaseModel):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class AnthropicUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class AnthropicMessage(BaseModel):
    """The whole answer of /v1/messages; with `stream: true` the answer is instead Anthropic's
    server-sent events (AnthropicStreamEvent)."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[Annotated[AnthropicThinkingContent | AnthropicTextContent
                            | AnthropicToolUseContent, Field(discriminator="type")]]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: AnthropicUsage


class AnthropicStreamEvent(BaseModel):
    """The data of one event of a streamed answer: its `type` is the event's name, and its other
    fields are Anthropic's for that event (`message`, `index`, `content_block`, `delta`,
    `usage`, `error`)."""

    type: Literal["message_start", "content_block_start", "content_block_delta",
                  "content_block_stop", "message_delta", "message_stop", "ping", "error"]


class AnthropicTokenCount(BaseModel):
    """The answer of /v1/messages/count_tokens."""

    input_tokens: int
