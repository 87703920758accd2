"""Bodies of Anthropic's Messages API (/v1/messages and /v1/messages/count_tokens), checked at
the edge. They run as Fleet's chat requests (fleet.api.anthropic.to_chat): these models only say
what Anthropic's clients may send, in Anthropic's words and ranges.

As on the chat route, a field Fleet would not apply is refused (400, naming it) rather than
silently ignored, and fields that change nothing about the answer are accepted: `metadata`,
`service_tier`, and `cache_control` wherever Anthropic takes it (llama.cpp and vLLM reuse a
shared prompt prefix by themselves, so there is nothing to mark). Tools that Anthropic's servers
run (web search, code execution, computer use...) are refused by name: Fleet runs none."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleet.api.protocol.fields import INT32_MAX, Flag, Text, few_items, integer, unsupported
from fleet.limits import schema_max_items

Tokens = integer(ge=1, le=INT32_MAX)
# Anthropic's `cache_control` ({"type": "ephemeral", "ttl": ...}): accepted, see the top.
CacheControl = dict[str, Any] | None


class _Body(BaseModel):
    # Read strictly from JSON (see fleet.api.protocol.fields); NaN and infinities refused.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False,
                              protected_namespaces=())


# ---- content blocks ---------------------------------------------------------------------------
class TextBlock(_Body):
    type: Literal["text"]
    text: str
    cache_control: CacheControl = None
    # A text block of an earlier answer, passed back as it came (Anthropic's answers carry
    # citations of documents; Fleet's never do, and reads only the text).
    citations: list[dict[str, Any]] | None = None


class Base64ImageSource(_Body):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class UrlImageSource(_Body):
    type: Literal["url"]
    url: Text


class ImageBlock(_Body):
    """An image for a model that sees (fleet.api.chat_images reads and checks it). Anthropic's
    `file` source names a file uploaded to its Files API: Fleet keeps no files, so it is
    refused as a source type it does not know."""

    type: Literal["image"]
    source: Annotated[Base64ImageSource | UrlImageSource, Field(discriminator="type")]
    cache_control: CacheControl = None

    def chat_part(self) -> dict[str, Any]:
        """The image as a chat message's part (OpenAI's `image_url`)."""
        source = self.source
        url = (source.url if isinstance(source, UrlImageSource)
               else f"data:{source.media_type};base64,{source.data}")
        return {"type": "image_url", "image_url": {"url": url}}


class ToolUseBlock(_Body):
    """A call the assistant made, in an earlier turn."""

    type: Literal["tool_use"]
    id: Text
    name: Text
    input: dict[str, Any]
    cache_control: CacheControl = None


class ToolResultBlock(_Body):
    """What a call returned: `tool_use_id` names the call."""

    type: Literal["tool_result"]
    tool_use_id: Text
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] = ""
    is_error: Flag = False
    cache_control: CacheControl = None


class ThinkingBlock(_Body):
    """A reasoning model's thoughts of an earlier turn (Fleet's answers sign none: "")."""

    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(_Body):
    """Thoughts that Anthropic's API encrypted: nothing here can read them, so they are left
    out of the prompt (a conversation begun with Claude may carry them)."""

    type: Literal["redacted_thinking"]
    data: str


def _blocks(*kinds: type) -> Any:
    """A turn's content: a string, or blocks of the kinds its role may hold (as on Anthropic's
    API: calls and thoughts are the assistant's, results the user's)."""
    union = kinds[0]
    for kind in kinds[1:]:
        union = union | kind
    return str | list[Annotated[union, Field(discriminator="type")]]


class UserMessage(_Body):
    role: Literal["user"]
    content: _blocks(TextBlock, ImageBlock, ToolResultBlock)


class AssistantMessage(_Body):
    role: Literal["assistant"]
    content: _blocks(TextBlock, ToolUseBlock, ThinkingBlock, RedactedThinkingBlock)


class SystemMessage(_Body):
    """The SDK's newer way to put instructions between turns."""

    role: Literal["system"]
    content: str | list[TextBlock]


Message = Annotated[UserMessage | AssistantMessage | SystemMessage, Field(discriminator="role")]


# ---- tools ------------------------------------------------------------------------------------
class ToolDefinition(_Body):
    """A tool the client runs (Anthropic's custom tool): the model may call it with an `input`
    that follows `input_schema`."""

    name: Text
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl = None
    # Fleet's grammar makes every call follow its schema, strict or not.
    strict: Flag | None = None

    @model_validator(mode="before")
    @classmethod
    def _custom_only(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") not in (None, "custom"):
            raise ValueError(f"tool {value.get('name')!r} is of type {value['type']!r}, a tool "
                             "that Anthropic's servers run; Fleet runs none. Declare a tool "
                             "that your client runs: name, description and input_schema")
        return value


class ToolChoiceAuto(_Body):
    type: Literal["auto"]
    disable_parallel_tool_use: Flag | None = None


class ToolChoiceAny(_Body):
    """A call of one of the tools is forced."""

    type: Literal["any"]
    disable_parallel_tool_use: Flag | None = None


class ToolChoiceTool(_Body):
    """A call of the tool `name` is forced."""

    type: Literal["tool"]
    name: Text
    disable_parallel_tool_use: Flag | None = None


class ToolChoiceNone(_Body):
    type: Literal["none"]


ToolChoice = Annotated[ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone,
                       Field(discriminator="type")]


# ---- thinking and structured output -----------------------------------------------------------
ThinkingDisplay = Literal["summarized", "omitted"]


class ThinkingEnabled(_Body):
    """A reasoning model thinks (its chat template's `enable_thinking`). Its thoughts count in
    max_tokens; Fleet's engines have no separate budget, so `budget_tokens` bounds nothing."""

    type: Literal["enabled"]
    budget_tokens: Tokens
    display: ThinkingDisplay | None = None


class ThinkingAdaptive(_Body):
    """The model decides whether to think (its template's default)."""

    type: Literal["adaptive"]
    display: ThinkingDisplay | None = None


class ThinkingDisabled(_Body):
    type: Literal["disabled"]


Thinking = Annotated[ThinkingEnabled | ThinkingAdaptive | ThinkingDisabled,
                     Field(discriminator="type")]


class JsonOutputFormat(_Body):
    """The answer is JSON that follows `schema` (Fleet's grammar, as chat's json_schema)."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    format: JsonOutputFormat | None = None
    effort: None = unsupported("an effort level is Claude's; Fleet's models have none")


class Metadata(_Body):
    user_id: str | None = None


# ---- the bodies -------------------------------------------------------------------------------
class _MessagesInput(_Body):
    """What /v1/messages and its count_tokens share: everything that makes the prompt."""

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1,
                                    json_schema_extra=schema_max_items("max_messages"))
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = Field(default=None,
                                               json_schema_extra=schema_max_items("max_tools"))
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    output_config: OutputConfig | None = None
    # The structured-outputs beta's name for output_config.format, which clients still send.
    output_format: JsonOutputFormat | None = None
    cache_control: CacheControl = None

    # Counted before the items are validated: a list of a million is refused for its length.
    _few_messages = few_items("max_messages", "messages")
    _few_tools = few_items("max_tools", "tools")

    @property
    def output_schema(self) -> dict[str, Any] | None:
        """The JSON schema the answer must follow, from whichever field gave it."""
        given = [f for f in (self.output_format,
                             self.output_config.format if self.output_config else None) if f]
        if len(given) > 1:
            raise ValueError("output_format and output_config.format both give the answer's "
                             "format; send one (output_config.format)")
        return given[0].json_schema if given else None

    @model_validator(mode="after")
    def _one_format(self) -> _MessagesInput:
        _ = self.output_schema  # both at once is a 400 here, before anything runs
        return self


class MessagesRequest(_MessagesInput):
    """POST /v1/messages. `max_tokens` is required, as on Anthropic's API."""

    max_tokens: Tokens
    stream: Flag = False
    stop_sequences: list[str] | None = Field(default=None,
                                             json_schema_extra=schema_max_items("max_stop"))
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: integer(ge=1, le=INT32_MAX) | None = None
    metadata: Metadata | None = None
    service_tier: Literal["auto", "standard_only"] | None = None

    _few_stops = few_items("max_stop", "stop_sequences")


class CountTokensRequest(_MessagesInput):
    """POST /v1/messages/count_tokens: the prompt of a Messages request, counted."""
