"""What the main endpoints answer, as pydantic models: for the OpenAPI document (fleet.api.openapi)
and for the tests that hold the answers to it. The routes write their JSON themselves (orjson,
on the hot path), so these models describe the answers and validate nothing at run time. Objects
allow more fields than these (the JSON Schema default): Fleet adds Xinference's to OpenAI's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error: OpenAI's shape, plus `detail`, a copy of the message where Xinference's
    client reads it."""

    error: ErrorDetail
    detail: str


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ToolCallFunction(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: ToolCallFunction


class ChatMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


FinishReason = Literal["stop", "length", "tool_calls"]
# vLLM's extension, on the choice that a stop string ended (in its last chunk when streamed).
_STOP_REASON = "The stop string that ended the choice, when one did (a vLLM extension)"


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: FinishReason | None
    logprobs: dict[str, Any] | None
    stop_reason: str | None = Field(default=None, description=_STOP_REASON)


class ChatCompletion(BaseModel):
    """The whole answer of /v1/chat/completions; with `stream: true` the answer is instead
    server-sent events, each `data: ` + a chat.completion.chunk, ending with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    finish_reason: FinishReason | None
    logprobs: dict[str, Any] | None
    stop_reason: str | None = Field(default=None, description=_STOP_REASON)


class ChatCompletionChunk(BaseModel):
    """One event of a streamed chat answer (`usage` only with stream_options.include_usage)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class StreamError(BaseModel):
    """An error after the answer's headers left: sent as an event, the way OpenAI sends it."""

    error: ErrorDetail


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: dict[str, Any] | None
    stop_reason: str | None = Field(default=None, description=_STOP_REASON)


class Completion(BaseModel):
    """The whole answer of /v1/completions; streamed as text_completion chunks (see
    ChatCompletion)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[CompletionChoice]
    usage: Usage


class CompletionChunk(BaseModel):
    """One event of a streamed completion (the same object as the whole answer, one piece)."""

    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    system_fingerprint: str | None
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # a string with encoding_format "base64"


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class RerankDocumentOut(BaseModel):
    text: str


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocumentOut | None


class RerankMeta(BaseModel):
    api_version: Any = None
    billed_units: Any = None
    tokens: dict[str, int] | None = None
    warnings: Any = None


class RerankResponse(BaseModel):
    id: str
    results: list[RerankResult]
    meta: RerankMeta


class ModelCard(BaseModel):
    """One running model: OpenAI's model object with Xinference's description fields."""

    id: str
    object: Literal["model"]
    owned_by: str
    model_uid: str
    model_type: str
    model_name: str
    status: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]
