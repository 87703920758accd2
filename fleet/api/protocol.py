"""Request bodies of the API, validated once at the edge."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleet.api.protocol_fields import (
    INT32_MAX,
    Flag,
    JsonObjectText,
    Text,
    TokenIds,
    integer,
    unsupported,
)
from fleet.catalogue.schemas import MODEL_TYPES
from fleet.catalogue.xinference_format import canonical_format
from fleet.errors import BadRequest
from fleet.limits import check_count, check_depth, check_ids_or_items, schema_max_items

# Xinference launch options that Fleet has no counterpart for: refused when set, so that nothing
# a user asked for is silently dropped. Their defaults (null, false), which Xinference's clients
# always send, pass.
_UNSUPPORTED_LAUNCH_OPTIONS = {
    "peft_model_config": "LoRA adapters (peft_model_config, xinference launch --lora-modules)",
    "replica_config": "per-replica placement (replica_config); place replicas with worker_ip "
                      "and gpu_idx",
    "quantization_config": "quantizing weights at load (quantization_config); launch a "
                           "quantized variant (-f gguf -q ...) instead",
    "enable_virtual_env": "a virtual environment per model (enable_virtual_env)",
    "virtual_env_packages": "a virtual environment per model (virtual_env_packages)",
    "virtual_env_find_links": "a virtual environment per model (virtual_env_find_links)",
}


RESERVED_ENVS = frozenset({"XOSCAR_AUTH_KEY", "FLEET_CLUSTER_SECRET"})


class LaunchRequest(BaseModel):
    """Xinference's launch body; unknown keys are engine arguments and pass through."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_name: str = Field(min_length=1)
    model_type: str | None = Field(default=None, description="In any case (llm is LLM)",
                                   json_schema_extra={"enum": [*MODEL_TYPES, None]})
    model_engine: str | None = None
    model_uid: str | None = Field(default=None, min_length=1, max_length=200)
    model_size_in_billions: int | float | str | None = None
    model_format: str | None = None
    quantization: str | None = None
    replica: int = Field(default=1, ge=1, le=64)
    n_gpu: int | str | None = "auto"
    gpu_idx: int | list[int] | None = None
    worker_ip: str | None = None
    model_path: str | None = None
    request_limits: int | None = Field(default=None, ge=1)
    envs: dict[str, str] | None = None

    @field_validator("envs")
    @classmethod
    def _envs_are_plain_and_not_fleets_own(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
                raise ValueError(f"envs: {name!r} is not an environment variable name")
            # The replica's key to the cluster's actor pools: replaced, it cuts the replica off.
            if name in RESERVED_ENVS:
                raise ValueError(f"envs: {name} is set by Fleet and cannot be given")
        return value

    @field_validator("model_uid")
    @classmethod
    def _uid_is_url_safe(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or value != value.strip()):
            raise ValueError("model_uid must not contain '/' or surrounding spaces")
        # GET /v1/models/estimate is the dry run and /v1/models/instances Xinference's launch
        # status, not models.
        if value in ("estimate", "instances"):
            raise ValueError(f"model_uid {value!r} is reserved")
        return value

    @field_validator("model_format")
    @classmethod
    def _canonical_format(cls, value: str | None) -> str | None:
        # Xinference's `ggufv2` is Fleet's `gguf`: resolved here, once, for launches and
        # their dry runs alike.
        return canonical_format(value) if value else value

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> LaunchRequest:
        extra = self.model_extra or {}
        for key, what in _UNSUPPORTED_LAUNCH_OPTIONS.items():
            if extra.get(key):
                raise ValueError(f"Fleet does not support {what}")
        if extra.get("n_worker") not in (None, 1, "1"):
            raise ValueError("n_worker: a replica runs on one worker in Fleet; "
                             "use replica to run more copies")
        for key, value in extra.items():  # engine options: free-form, kept with the model
            check_depth(value, key)
        return self

    @field_validator("n_gpu")
    @classmethod
    def _n_gpu(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and value.lower() in ("none", "null"):
            return None  # how a query string (GET /v1/models/estimate) spells null
        if isinstance(value, str) and value != "auto":
            if not value.isdigit():
                raise ValueError("n_gpu must be an integer, 'auto' or null")
            return int(value)
        return value


class RegisterRequest(BaseModel):
    """A custom model family to register: a JSON object, or that object as a JSON string
    (Xinference's client sends the string). Read here, at the edge, so that a family nested
    past max_json_depth is refused before it is kept (see fleet.limits)."""

    model: dict[str, Any] | JsonObjectText = Field(
        description="The model family (the JSON of a custom model file), as an object or a "
                    "JSON string")
    persist: Flag = True
    worker_ip: str | None = None

    @field_validator("model")
    @classmethod
    def _family_object(cls, value: str | dict[str, Any]) -> dict[str, Any]:
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"model is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadRequest("model must be a JSON object describing the model family")
        check_depth(value, "model")
        return value

    @property
    def family(self) -> dict[str, Any]:
        assert isinstance(self.model, dict)  # made so by _family_object
        return self.model


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # see fleet.api.protocol_fields

    model: str = Field(min_length=1)
    input: Text | Annotated[list[Text], Field(min_length=1)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1)] = Field(json_schema_extra=schema_max_items("max_items"))
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: integer(ge=1, le=INT32_MAX) | None = None
    # Longer inputs than the model reads: cut them (True, "END") or refuse them (False, "NONE").
    truncate: Flag | Literal["END", "NONE"] = True
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _few_inputs(cls, value: Any) -> Any:
        # Before the items are validated: a list of a million is refused for its length.
        check_ids_or_items(value, "input")
        return value

    @property
    def should_truncate(self) -> bool:
        return self.truncate in (True, "END")


class RerankDocument(BaseModel):
    text: Text


class RerankRequest(BaseModel):
    """Cohere/Jina's rerank body, as Xinference serves it."""

    model_config = ConfigDict(extra="allow", strict=True)  # see fleet.api.protocol_fields

    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[Text | RerankDocument] = Field(
        min_length=1, json_schema_extra=schema_max_items("max_items"))
    top_n: integer(ge=1) | None = None
    return_documents: Flag | None = False
    return_len: Flag | None = False
    # Xinference's client always sends it, as null.
    max_chunks_per_doc: None = unsupported("split long documents before sending them")

    @field_validator("documents", mode="before")
    @classmethod
    def _few_documents(cls, value: Any) -> Any:
        if isinstance(value, list):
            check_count("max_items", len(value), "documents")
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]
