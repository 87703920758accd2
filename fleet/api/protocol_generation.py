"""Bodies of /v1/chat/completions and /v1/completions, checked at the edge.

Unknown fields are refused (400, naming them) rather than silently ignored: a client that sends
`response_format` with a JSON schema must learn that it was not applied. Fields that change
nothing about the answer (`user`, `store`, `metadata`...) are accepted."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleet.errors import BadRequest


class _GenerationBase(BaseModel):
    """OpenAI's fields, plus the extensions vLLM and Xinference accept with the same meaning
    (top_k, repetition_penalty, stop_token_ids, chat_template_kwargs)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=-1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    n: int = Field(default=1, ge=1, le=16)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=10.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 16:
            raise ValueError("at most 16 stop strings")
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
    messages: list[dict[str, Any]]
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        kind = (self.response_format or {}).get("type", "text")
        if kind != "text":
            raise BadRequest(f"response_format {kind!r} is not supported yet; only 'text'",
                             code="unsupported_parameter")
        for index, tool in enumerate(self.tools or []):
            function = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
                raise BadRequest(f"tools[{index}] must be {{'type': 'function', 'function': "
                                 "{'name': ..., 'parameters': ...}}")
        if isinstance(self.tool_choice, str) and self.tool_choice not in ("none", "auto", "required"):
            raise BadRequest(f"tool_choice {self.tool_choice!r} must be 'none', 'auto', 'required' "
                             "or a function")
        return self


class CompletionRequest(_GenerationBase):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        unsupported = [name for name, value in (("echo", self.echo), ("suffix", self.suffix))
                       if value]
        if self.best_of not in (None, self.n):
            unsupported.append("best_of")
        if unsupported:
            raise BadRequest(f"not supported: {', '.join(unsupported)}", code="unsupported_parameter")
        return self
