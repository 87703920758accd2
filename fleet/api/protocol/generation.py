"""Bodies of /v1/chat/completions and /v1/completions, checked at the edge.

Unknown fields are refused (400, naming them) rather than silently ignored: a client that sends
a field Fleet does not apply must learn that it was not applied. Fields that change
nothing about the answer (`user`, `store`, `metadata`...) are accepted."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from fleet.api.protocol.fields import (
    INT32_MAX,
    Flag,
    JsonObjectText,
    KeepAlive,
    NonBlank,
    Text,
    TokenId,
    few_items,
    integer,
    unsupported,
)
from fleet.errors import BadRequest
from fleet.generation.structured import check_request as check_structured
from fleet.limits import (
    check_count,
    check_ids_or_items,
    exceeded,
    limits,
    schema_max,
    schema_max_items,
)
from fleet.messages import GenerationCall, GenerationKind

# What the engines accept: torch seeds its generators with 64-bit integers (2**64 overflowed in
# prefill), llama.cpp reads top_k as a 32-bit int.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
# A repetition penalty divides (or multiplies) a seen token's logit: at 0 llama.cpp refuses to
# sample at all, and 5e-324 reached it as 0 (it reads a 32-bit float); below 0.01 the penalty
# would multiply logits by more than 100, which no sampler setting means.
REPETITION_PENALTY_MIN, REPETITION_PENALTY_MAX = 0.01, 10.0
Tokens = integer(ge=1, le=INT32_MAX)  # max_tokens, max_completion_tokens
# logit_bias: a token id (as JSON object keys are strings) -> a bias the samplers take.
BiasedToken = Annotated[str, Field(pattern=r"^[0-9]{1,10}$")]
Bias = Annotated[float, Field(ge=-100.0, le=100.0)]
# The request fields that the replica reads (the rest only the API uses, or nobody).
_CALL_FIELDS = frozenset(GenerationCall.__struct_fields__) - {"kind", "tools", "tool_choice"}


class _GenerationBase(BaseModel):
    """OpenAI's fields, plus the extensions vLLM and Xinference accept with the same meaning
    (top_k, repetition_penalty, stop_token_ids, chat_template_kwargs)."""

    # NaN and infinities are refused (JSON has neither; Python's parser reads them): no
    # sampler means anything by them.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False,
                              strict=True)  # see fleet.api.protocol.fields
    _KIND: ClassVar[GenerationKind]

    model: str = Field(min_length=1)
    stream: Flag = False
    stream_options: dict[str, Any] | None = None
    max_tokens: Tokens | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: integer(ge=-1, le=INT32_MAX) | None = None
    seed: integer(ge=SEED_MIN, le=SEED_MAX) | None = None
    stop: str | list[str] | None = Field(default=None,
                                         json_schema_extra=schema_max_items("max_stop"))
    stop_token_ids: list[TokenId] | None = Field(default=None,
                                             json_schema_extra=schema_max_items("max_stop"))
    n: integer(ge=1) = Field(default=1, json_schema_extra=schema_max("max_n"))
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, ge=REPETITION_PENALTY_MIN,
                                             le=REPETITION_PENALTY_MAX)
    logit_bias: dict[BiasedToken, Bias] | None = None
    # Structured output (fleet.generation.structured): OpenAI's response_format, and the
    # guided-decoding fields of vLLM that Xinference passes on. Fleet picks the grammar backend
    # itself (llguidance), so guided_decoding_backend is accepted and changes nothing.
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | JsonObjectText | None = None
    guided_regex: NonBlank | None = None
    guided_choice: list[Text] | None = Field(default=None, min_length=1,
                                             json_schema_extra=schema_max_items("max_tools"))
    guided_grammar: NonBlank | None = None
    guided_decoding_backend: str | None = None
    user: str | None = None
    store: Flag | None = None
    metadata: dict[str, str] | None = None
    # Ollama's: the model's keep_alive from now on (fleet.api.keep_alives); not the replica's.
    keep_alive: KeepAlive | None = None

    # Counts are checked before the items are validated (fleet.api.protocol.fields.few_items).
    _few_stops = few_items("max_stop", "stop")
    _few_stop_ids = few_items("max_stop", "stop_token_ids")

    @field_validator("n")
    @classmethod
    def _few_choices(cls, value: int) -> int:
        if value > limits().max_n:
            raise exceeded("max_n", f"n={value} choices", "too_many_choices")
        return value

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _few_biases(cls, value: Any) -> Any:
        if isinstance(value, dict):
            check_count("max_logit_bias", len(value), "logit_bias")
        return value

    _call: GenerationCall | None = PrivateAttr(default=None)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def generation_call(self) -> GenerationCall:
        """What the replica needs, typed: the request's fields, nothing the API alone uses
        (model, stream, user...). Made once: the checks across fields read it too."""
        if self._call is None:
            fields = self.__dict__
            values = {name: fields[name] for name in self.model_fields_set
                      if name in _CALL_FIELDS and fields[name] is not None}
            self._call = GenerationCall(kind=self._KIND, **values, **self._typed_fields())
        return self._call

    def _typed_fields(self) -> dict[str, Any]:
        """Fields held as pydantic models here, as the plain JSON the replica reads."""
        return {}


class ToolFunction(BaseModel):
    """A function the model may call; OpenAI's further fields (`strict`...) pass through."""

    model_config = ConfigDict(extra="allow")

    name: Text
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; none: any object

    @model_validator(mode="before")
    @classmethod
    def _parameters_are_a_schema(cls, value: Any) -> Any:
        # Named here, where the function's name is known: "Input should be an object" at
        # tools.0.function.parameters leaves a client with many tools to count them.
        if isinstance(value, dict) and value.get("parameters") is not None \
                and not isinstance(value["parameters"], dict):
            raise ValueError(f"the parameters of function {value.get('name')!r} must be a JSON "
                             "schema object")
        return value


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    function: ToolFunction


class NamedFunction(BaseModel):
    name: Text


class ToolChoice(BaseModel):
    """A call of this function is forced (it must be one of `tools`)."""

    type: Literal["function"]
    function: NamedFunction


# top_logprobs (other than 0) needs logprobs=true: the replica refuses it otherwise
# (fleet.generation.openai_params), and the document says so.
_TOP_LOGPROBS_NEED_LOGPROBS = {"anyOf": [
    {"properties": {"top_logprobs": {"enum": [0, None]}}},
    {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}},
]}


class ChatCompletionRequest(_GenerationBase):
    model_config = ConfigDict(json_schema_extra=_TOP_LOGPROBS_NEED_LOGPROBS)
    _KIND = "chat"

    messages: list[dict[str, Any]] = Field(json_schema_extra=schema_max_items("max_messages"))
    max_completion_tokens: Tokens | None = None
    logprobs: Flag | None = None
    top_logprobs: integer(ge=0, le=20) | None = None
    tools: list[Tool] | None = Field(default=None, json_schema_extra=schema_max_items("max_tools"))
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: Flag | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    _few_messages = few_items("max_messages", "messages")
    _few_tools = few_items("max_tools", "tools")

    def _typed_fields(self) -> dict[str, Any]:
        typed: dict[str, Any] = {}
        if self.tools is not None:
            typed["tools"] = [tool.model_dump(exclude_unset=True) for tool in self.tools]
        if isinstance(self.tool_choice, ToolChoice):
            typed["tool_choice"] = self.tool_choice.model_dump(exclude_unset=True)
        elif self.tool_choice is not None:
            typed["tool_choice"] = self.tool_choice
        return typed

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        # Whether a forced call names one of the tools, and whether one constraint at a time
        # asks for the answer's shape: across fields, beyond what a schema says.
        check_structured(self.generation_call())
        return self


class CompletionRequest(_GenerationBase):
    _KIND = "completion"

    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    logprobs: integer(ge=0, le=5) | None = None
    echo: Literal[False] | None = Field(default=None, description="Not supported: false, null "
                                        "or absent (the answer never repeats the prompt)")
    suffix: None = unsupported("no engine here fills in between a prompt and a suffix")
    best_of: integer(ge=1, le=INT32_MAX) | None = Field(default=None,
                                description="Only the value of n (every choice is returned)")

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_size(cls, value: Any) -> Any:
        check_ids_or_items(value, "prompt")
        return value

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.best_of not in (None, self.n):
            raise BadRequest(f"best_of={self.best_of} is not supported: only best_of=n "
                             f"({self.n}), which returns every choice", code="unsupported_parameter")
        check_structured(self.generation_call())
        return self
