"""Bodies of /v1/chat/completions and /v1/completions, checked at the edge.

Unknown fields are refused (400, naming them) rather than silently ignored: a client that sends
a field Fleet does not apply must learn that it was not applied. Fields that change
nothing about the answer (`user`, `store`, `metadata`...) are accepted."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fleet.api.protocol import INT32_MAX, TokenId
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

# What the engines accept: torch seeds its generators with 64-bit integers (2**64 overflowed in
# prefill), llama.cpp reads top_k as a 32-bit int.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
# A repetition penalty divides (or multiplies) a seen token's logit: at 0 llama.cpp refuses to
# sample at all, and 5e-324 reached it as 0 (it reads a 32-bit float); below 0.01 the penalty
# would multiply logits by more than 100, which no sampler setting means.
REPETITION_PENALTY_MIN, REPETITION_PENALTY_MAX = 0.01, 10.0


class _GenerationBase(BaseModel):
    """OpenAI's fields, plus the extensions vLLM and Xinference accept with the same meaning
    (top_k, repetition_penalty, stop_token_ids, chat_template_kwargs)."""

    # NaN and infinities are refused (JSON has neither; Python's parser reads them): no
    # sampler means anything by them.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1, le=INT32_MAX)
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    stop: str | list[str] | None = Field(default=None,
                                         json_schema_extra=schema_max_items("max_stop"))
    stop_token_ids: list[TokenId] | None = Field(default=None,
                                             json_schema_extra=schema_max_items("max_stop"))
    n: int = Field(default=1, ge=1, json_schema_extra=schema_max("max_n"))
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, ge=REPETITION_PENALTY_MIN,
                                             le=REPETITION_PENALTY_MAX)
    logit_bias: dict[str, float] | None = None
    # Structured output (fleet.generation.structured): OpenAI's response_format, and the
    # guided-decoding fields of vLLM that Xinference passes on. Fleet picks the grammar backend
    # itself (llguidance), so guided_decoding_backend is accepted and changes nothing.
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = Field(default=None,
                                            json_schema_extra=schema_max_items("max_tools"))
    guided_grammar: str | None = None
    guided_decoding_backend: str | None = None
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None

    # Counts are checked before the items are validated ("before" validators), so that a list
    # of a million entries is refused for its length, not validated entry by entry first.
    @field_validator("stop", "stop_token_ids", mode="before")
    @classmethod
    def _few_stops(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, list):
            check_count("max_stop", len(value), str(info.field_name))
        return value

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

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value and any(not -100.0 <= v <= 100.0 for v in value.values()):
            raise ValueError("logit_bias values must be between -100 and 100")
        return value

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def engine_body(self) -> dict[str, Any]:
        """What the replica needs: the fields the client set, nothing the API alone uses."""
        return self.model_dump(exclude_unset=True, exclude={"stream", "stream_options", "user",
                                                            "store", "metadata"})


class ChatCompletionRequest(_GenerationBase):
    messages: list[dict[str, Any]] = Field(json_schema_extra=schema_max_items("max_messages"))
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = Field(default=None,
                                               json_schema_extra=schema_max_items("max_tools"))
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("messages", mode="before")
    @classmethod
    def _few_messages(cls, value: Any) -> Any:
        if isinstance(value, list):
            check_count("max_messages", len(value), "messages")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _few_tools(cls, value: Any) -> Any:
        if isinstance(value, list):
            check_count("max_tools", len(value), "tools")
        return value

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        for index, tool in enumerate(self.tools or []):
            function = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
                raise BadRequest(f"tools[{index}] must be {{'type': 'function', 'function': "
                                 "{'name': ..., 'parameters': ...}}")
        if isinstance(self.tool_choice, str) and self.tool_choice not in ("none", "auto", "required"):
            raise BadRequest(f"tool_choice {self.tool_choice!r} must be 'none', 'auto', 'required' "
                             "or a function")
        check_structured(self.model_dump(exclude_unset=True))
        return self


class CompletionRequest(_GenerationBase):
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1, le=INT32_MAX)

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_size(cls, value: Any) -> Any:
        check_ids_or_items(value, "prompt")
        return value

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        unsupported = [name for name, value in (("echo", self.echo), ("suffix", self.suffix))
                       if value]
        if self.best_of not in (None, self.n):
            unsupported.append("best_of")
        if unsupported:
            raise BadRequest(f"not supported: {', '.join(unsupported)}", code="unsupported_parameter")
        check_structured(self.model_dump(exclude_unset=True))
        return self
