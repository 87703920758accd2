"""Request bodies of the API, validated once at the edge (the launch body, which the cluster
reads too, is fleet.launch_request's)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleet.api.protocol.fields import (
    INT32_MAX,
    Flag,
    JsonObjectText,
    KeepAlive,
    Text,
    TokenIds,
    few_items,
    integer,
    unsupported,
)
from fleet.errors import BadRequest
from fleet.limits import check_depth, check_ids_or_items, schema_max_items


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
    model_config = ConfigDict(extra="allow", strict=True)  # see fleet.api.protocol.fields

    model: str = Field(min_length=1)
    input: Text | Annotated[list[Text], Field(min_length=1)] | TokenIds | Annotated[
        list[TokenIds], Field(min_length=1)] = Field(json_schema_extra=schema_max_items("max_items"))
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: integer(ge=1, le=INT32_MAX) | None = None
    # Longer inputs than the model reads: cut them (True, "END") or refuse them (False, "NONE").
    truncate: Flag | Literal["END", "NONE"] = True
    user: str | None = None
    keep_alive: KeepAlive | None = None

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

    model_config = ConfigDict(extra="allow", strict=True)  # see fleet.api.protocol.fields

    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[Text | RerankDocument] = Field(
        min_length=1, json_schema_extra=schema_max_items("max_items"))
    top_n: integer(ge=1) | None = None
    return_documents: Flag | None = False
    return_len: Flag | None = False
    keep_alive: KeepAlive | None = None
    # Xinference's client always sends it, as null.
    max_chunks_per_doc: None = unsupported("split long documents before sending them")

    _few_documents = few_items("max_items", "documents")

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]
