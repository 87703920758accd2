"""Request bodies of the API, validated once at the edge (the launch body, which the cluster
reads too, is fleet.launch_request's)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleet.limits import check_count, check_ids_or_items, schema_max_items

# Token ids and counts travel to the replicas as 32-bit integers at most (engines read them so,
# and an integer past 64 bits cannot be sent at all): 2**31 - 1 is far above any vocabulary.
# Strict: `true` is not token 1.
INT32_MAX = 2**31 - 1
TokenId = Annotated[int, Field(strict=True, ge=0, le=INT32_MAX)]


class RegisterRequest(BaseModel):
    """Xinference's client sends the family as a JSON string in `model`."""

    model: str | dict[str, Any]
    persist: bool = True
    worker_ip: str | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        json_schema_extra=schema_max_items("max_items"))
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1, le=INT32_MAX)
    # Longer inputs than the model reads: cut them (True, "END") or refuse them (False, "NONE").
    truncate: bool | Literal["END", "NONE"] = True
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
    text: str


class RerankRequest(BaseModel):
    """Cohere/Jina's rerank body, as Xinference serves it."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    query: str = Field(min_length=1)
    documents: list[str | RerankDocument] = Field(
        min_length=1, json_schema_extra=schema_max_items("max_items"))
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool | None = False
    return_len: bool | None = False
    max_chunks_per_doc: int | None = None

    @field_validator("documents", mode="before")
    @classmethod
    def _few_documents(cls, value: Any) -> Any:
        if isinstance(value, list):
            check_count("max_items", len(value), "documents")
        return value

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]
