"""The body of OpenAI's Responses API (POST /v1/responses), checked at the edge. It runs as
Fleet's chat request (fleet.api.responses.to_chat): these models only say what OpenAI's clients
may send, in the Responses API's words and ranges.

As on the chat route, a field Fleet would not apply is refused (400, naming it) rather than
silently ignored, and fields that change nothing about the answer are accepted (`metadata`,
`user`, `prompt_cache_key`, `safety_identifier`, `service_tier`...). Tools that OpenAI's servers
run (web search, file search, computer use, code interpreter, MCP...) are refused by name:
Fleet runs none. `background` is refused: an answer here is made while its request waits."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from fleet.api.protocol.fields import INT32_MAX, Flag, Text, few_items, integer, unsupported
from fleet.errors import BadRequest
from fleet.limits import schema_max_items

Tokens = integer(ge=1, le=INT32_MAX)
ItemStatus = Literal["in_progress", "completed", "incomplete"]


class _Body(BaseModel):
    # Read strictly from JSON (see fleet.api.protocol.fields); NaN and infinities refused.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                              protected_namespaces=())


# ---- content parts ----------------------------------------------------------------------------
class InputText(_Body):
    type: Literal["input_text"]
    text: str
    prompt_cache_breakpoint: dict[str, Any] | None = None  # prefixes are reused by themselves


class OutputText(_Body):
    """The text of an earlier answer, passed back as it came."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] | None = None
    logprobs: list[dict[str, Any]] | None = None


class Refusal(_Body):
    type: Literal["refusal"]
    refusal: str


class InputImage(_Body):
    """An image for a model that sees, as a URL or a data URL (fleet.api.chat_images reads and
    checks it). `file_id` names a file uploaded to OpenAI's Files API: Fleet keeps no files."""

    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None

    def chat_part(self, where: str) -> dict[str, Any]:
        """The image as a chat message's part (OpenAI's `image_url`)."""
        if self.file_id is not None or self.image_url is None:
            raise BadRequest(f"{where}: an input_image needs its image_url (a URL or a data URL); "
                             "file_id is not supported: Fleet keeps no files",
                             code="unsupported_parameter")
        return {"type": "image_url", "image_url": {"url": self.image_url}}


class InputFile(_Body):
    """Read so that it is refused in words: Fleet keeps no files."""

    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


Part = Annotated[InputText | OutputText | Refusal | InputImage | InputFile,
                 Field(discriminator="type")]


# ---- input items ------------------------------------------------------------------------------
class MessageItem(_Body):
    """A turn: the user's, the instructions' (system, developer), or an earlier answer's."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None
    status: ItemStatus | None = None
    phase: Literal["commentary", "final_answer"] | None = None


class FunctionCallItem(_Body):
    """A call the model made in an earlier turn."""

    type: Literal["function_call"]
    call_id: Text
    name: Text
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(_Body):
    """What the client's function returned: `call_id` names the call."""

    type: Literal["function_call_output"]
    call_id: Text
    output: str | list[Part]
    id: str | None = None
    status: ItemStatus | None = None


class ReasoningSummary(_Body):
    type: Literal["summary_text"]
    text: str


class ReasoningText(_Body):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(_Body):
    """A reasoning model's thoughts of an earlier turn, passed back as they came."""

    type: Literal["reasoning"]
    summary: list[ReasoningSummary] = []
    content: list[ReasoningText] | None = None
    id: str | None = None
    encrypted_content: str | None = None
    status: ItemStatus | None = None


def _item_kind(value: Any) -> str | None:
    """An item's kind: its `type`; a message may leave it out (OpenAI's "easy" message)."""
    if isinstance(value, dict):
        kind = value.get("type", "message")
        return kind if isinstance(kind, str) else None
    return getattr(value, "type", None)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")] | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind, custom_error_type="unsupported_item", custom_error_message=(
        "an input item is a message, function_call, function_call_output or reasoning item; "
        "Fleet takes no other kind"))]


# ---- tools ------------------------------------------------------------------------------------
# Tools that OpenAI's servers run: refused by name (see the top).
HOSTED_TOOLS = ("web_search", "web_search_preview", "web_search_preview_2025_03_11",
                "web_search_2025_08_26", "file_search", "computer_use_preview", "computer",
                "code_interpreter", "image_generation", "mcp", "local_shell", "shell",
                "apply_patch", "custom", "tool_search")


class FunctionTool(_Body):
    """A function the client runs: the model may call it with arguments that follow
    `parameters`. Fleet's grammar makes every call follow its schema, strict or not."""

    type: Literal["function"]
    name: Text
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: Flag | None = None

    @model_validator(mode="before")
    @classmethod
    def _functions_only(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") != "function":
            kind = value.get("type")
            if kind in HOSTED_TOOLS:
                raise ValueError(f"tool type {kind!r} is a tool that OpenAI's servers run; "
                                 "Fleet runs none. Declare a function tool that your client "
                                 "runs: type 'function', name and parameters")
            raise ValueError(f"tool type {kind!r} is not supported: only 'function' tools")
        return value


class ToolChoiceFunction(_Body):
    """A call of the function `name` is forced."""

    type: Literal["function"]
    name: Text


ToolChoice = Literal["auto", "none", "required"] | ToolChoiceFunction


# ---- text format and reasoning ------------------------------------------------------------------
class TextFormat(_Body):
    type: Literal["text"]


class JsonObjectFormat(_Body):
    type: Literal["json_object"]


class JsonSchemaFormat(_Body):
    """The answer is JSON that follows `schema` (Fleet's grammar, as chat's json_schema)."""

    type: Literal["json_schema"]
    name: Text
    json_schema: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: Flag | None = None


Format = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class TextConfig(_Body):
    format: Format | None = None
    verbosity: None = unsupported("no model here has a verbosity setting")


class Reasoning(_Body):
    """A reasoning model thinks unless `effort` is "none" (its chat template's
    `enable_thinking`); Fleet's engines have no budget by effort, so the other efforts are
    the same. `summary`: the answer carries the thoughts as the reasoning item's summary."""

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


# ---- the body -----------------------------------------------------------------------------------
class ResponsesRequest(_Body):
    """POST /v1/responses."""

    model: str = Field(min_length=1)
    input: str | Annotated[list[InputItem], Field(
        min_length=1, json_schema_extra=schema_max_items("max_messages"))]
    instructions: str | None = None
    max_output_tokens: Tokens | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    tools: list[FunctionTool] | None = Field(default=None,
                                             json_schema_extra=schema_max_items("max_tools"))
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: Flag | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    stream: Flag = False
    stream_options: dict[str, Any] | None = None
    store: Flag | None = None
    previous_response_id: Text | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    service_tier: str | None = None
    truncation: Literal["disabled"] | None = Field(
        default=None, description="Only 'disabled': a prompt longer than the model's context "
                                  "is refused, never cut")
    # Codex asks for the encrypted thoughts it would pass back; Fleet encrypts none.
    include: list[Literal["reasoning.encrypted_content"]] | None = None
    background: Literal[False] | None = Field(
        default=None, description="Not supported: false, null or absent (an answer is made "
                                  "while its request waits)")

    @field_validator("background", mode="before")
    @classmethod
    def _in_the_foreground(cls, value: Any) -> Any:
        if value is True:
            raise ValueError("background responses are not supported: Fleet makes an answer "
                             "while its request waits (send background false or leave it out)")
        return value

    max_tool_calls: None = unsupported("it bounds the calls of hosted tools; Fleet runs none")
    top_logprobs: None = unsupported("the Responses route returns no log probabilities")
    prompt: None = unsupported("Fleet keeps no prompt templates")
    conversation: None = unsupported("Fleet keeps no conversations: use previous_response_id")

    # Counted before the items are validated (fleet.api.protocol.fields.few_items).
    _few_items = few_items("max_messages", "input")
    _few_tools = few_items("max_tools", "tools")

    @property
    def input_items(self) -> list[InputItem]:
        """`input` as items (a string is one user message)."""
        if isinstance(self.input, str):
            return [MessageItem(role="user", content=self.input)]
        return self.input
