"""Field types that the request models share, each a pydantic constraint, so that the OpenAPI
document and the check come from the same place: what the document allows, the server takes,
and what it refuses, the document says. No Python runs per value where pydantic's own
validators can do the work (these fields are on the hot paths)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainValidator, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from fleet.keep_alive import MAX_KEEP_ALIVE_S, parse_keep_alive
from fleet.limits import check_count

# The JSON bodies of the hot paths (embeddings, rerank, chat, completions) are read strictly
# (`model_config = ConfigDict(strict=True)`): pydantic's lax mode would read true as 1 and "2"
# as 2, which the document does not allow. Their integers are `integer(...)`.


def _whole(ge: int | None, le: int | None) -> Callable[[Any], int]:
    """The second member's check, run only where the int member failed: a float that is a
    whole number (not pydantic's multiple_of=1, which lets 1e-42 through as 0) within the
    bounds as an integer. Anything else is not its to judge: an int is the int member's (as a
    float, -2**63 - 1 would round into the bounds), and a string or a boolean is neither's."""
    def check(value: Any) -> int:
        if not isinstance(value, float):
            raise PydanticCustomError("float_type", "Input should be a valid number")
        if not value.is_integer():
            raise ValueError("Input should be a whole number")
        number = int(value)
        if ge is not None and number < ge:
            raise ValueError(f"Input should be greater than or equal to {ge}")
        if le is not None and number > le:
            raise ValueError(f"Input should be less than or equal to {le}")
        return number
    return check


def integer(ge: int | None = None, le: int | None = None) -> Any:
    """An integer field's type in a strict body: a JSON integer, 2 or 2.0 (JSON Schema counts a
    whole number as an integer however it is spelled, and clients may send one so), never true
    or "2". An int matches the first member at once, so it costs what a strict int did; Python
    runs only for what the first member refuses."""
    bounds = {key: value for key, value in (("ge", ge), ("le", le)) if value is not None}
    schema = {"type": "integer", **({"minimum": ge} if ge is not None else {}),
              **({"maximum": le} if le is not None else {})}
    return Annotated[
        Annotated[int, Field(strict=True, **bounds)] | Annotated[float, PlainValidator(_whole(ge, le))],
        WithJsonSchema(schema),
    ]


# Token ids and counts travel to the replicas as 32-bit integers at most (engines read them so,
# and an integer past 64 bits cannot be sent at all): 2**31 - 1 is far above any vocabulary.
INT32_MAX = 2**31 - 1
TokenId = integer(ge=0, le=INT32_MAX)

# JSON's true or false: pydantic's lax mode would also read 0, 1 and "yes" as booleans, which
# the document does not allow (a form's fields, all text, keep the lax reading).
Flag = Annotated[bool, Field(strict=True)]

# What an engine reads must hold something: "" and [] are refused.
Text = Annotated[str, Field(min_length=1)]
TokenIds = Annotated[list[TokenId], Field(min_length=1)]

# Text with something besides whitespace (as str.strip() reads it: \x1c-\x1f are whitespace
# there, not for the regular expression's \s).
NonBlank = Annotated[str, Field(pattern=r"[^\s\x1c-\x1f]")]

# A JSON object sent as a string (vLLM's guided_json, Xinference's registrations). Its reader
# parses it, and refuses what is not JSON or not an object in its own words; the document says
# the same: JSON (contentMediaType), and an object (valid JSON that starts with `{` after JSON's
# own whitespace can be nothing else).
JsonObjectText = Annotated[str, WithJsonSchema({
    "type": "string", "pattern": r"^[ \t\n\r]*\{", "contentMediaType": "application/json"})]


def few_items(limit: str, field: str) -> Any:
    """The validator that refuses a list `field` longer than the limit `limit` (fleet.limits),
    naming the field: assigned in a body's class (`_few_tools = few_items("max_tools",
    "tools")`). It runs before the items are validated, so that a list of a million entries is
    refused for its length, not validated entry by entry first."""
    def check(cls: type, value: Any) -> Any:
        if isinstance(value, list):
            check_count(limit, len(value), field)
        return value
    return field_validator(field, mode="before")(check)


def unsupported(why: str) -> Any:
    """The Field of a field that Fleet does not support but that clients send as null (its type
    is None): null or absent passes, anything else is a 400 ("... is not supported: send null
    or leave it out"), and the document says why."""
    return Field(default=None, description=f"Not supported: null or absent ({why})")


def _a_duration(value: str | float) -> str | float:
    # A BadRequest, not a ValueError: its own message names the field and the forms it takes
    # (fleet.keep_alive), where pydantic's would prefix it with the location again.
    parse_keep_alive(value)
    return value


# Ollama's per-request `keep_alive`: how long the model stays loaded after this request, from now
# on (fleet.api.keep_alives). The pattern is parse_keep_alive's grammar, so that the document
# takes what the server does; a number is seconds, any negative one never.
_UNIT = "([mM][sS]|[sSmMhH])"
KEEP_ALIVE_PATTERN = rf"^\s*-?(\d+(\.\d+)?|(\d+(\.\d+)?{_UNIT})+)\s*$"
KeepAlive = Annotated[str | float, AfterValidator(_a_duration), WithJsonSchema({
    "anyOf": [{"type": "string", "pattern": KEEP_ALIVE_PATTERN, "maxLength": 40},
              {"type": "number", "maximum": MAX_KEEP_ALIVE_S}],
    "description": "How long the model stays loaded after this request, from now on, as "
                   "Ollama's keep_alive: seconds, a duration (30s, 10m, 1h), -1 never, 0 "
                   "unload once answered"})]
