"""What the Responses routes answer, as pydantic models for the OpenAPI document
(fleet.api.openapi) and for the tests that hold the answers to it. The routes write their JSON
themselves (fleet.api.responses.answer), so these validate nothing at run time. Objects allow
more fields than these (the JSON Schema default)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: dict[str, int]
    output_tokens: int
    output_tokens_details: dict[str, int]
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseObject(BaseModel):
    """A response: `output` holds its items in the order the model wrote them (`reasoning`,
    `message` with `output_text` parts, `function_call`)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["completed", "incomplete", "in_progress"]
    error: dict[str, Any] | None
    incomplete_details: IncompleteDetails | None
    model: str
    output: list[dict[str, Any]]
    usage: ResponseUsage | None
    previous_response_id: str | None
    store: bool


class ResponseStreamEvent(BaseModel):
    """The data of one event of a streamed response: its `type` is the event's name, its
    `sequence_number` counts the events from 0, and its other fields are OpenAI's for that
    event (`response`, `item`, `part`, `delta`, `text`, `arguments`...)."""

    type: Literal["response.created", "response.in_progress", "response.output_item.added",
                  "response.content_part.added", "response.output_text.delta",
                  "response.output_text.done", "response.content_part.done",
                  "response.reasoning_text.delta", "response.reasoning_text.done",
                  "response.reasoning_summary_part.added",
                  "response.reasoning_summary_text.delta",
                  "response.reasoning_summary_text.done",
                  "response.reasoning_summary_part.done",
                  "response.function_call_arguments.delta",
                  "response.function_call_arguments.done", "response.output_item.done",
                  "response.completed", "response.incomplete", "error"]
    sequence_number: int
