"""What one request may ask of a Fleet server, in one typed place: items per request, tokens a
request may queue, body sizes. Each limit has a default that no ordinary client reaches and an
environment variable that changes it, read once per process (the API process for what the API
checks, each replica's process for what the replica checks: a worker's replicas inherit its
environment). A request past a limit gets a 4xx whose message names the limit, its value and the
variable (see `exceeded`), so that a refused client learns at once what to change, and an
operator how to allow it.

Why these defaults:
- items (embeddings `input`, rerank `documents`): 2048, OpenAI's own cap on embedding inputs.
- tokens a request may queue: 300,000, OpenAI's cap on one embeddings request; for chat and
  completions, `n` x (prompt + max_tokens), where one full context is always allowed.
- `n` 16 and stop strings 16 (what Fleet accepted before they were configurable), tools 128
  (OpenAI's), messages 2048, logit_bias 1024 entries.
- bodies: 64 MiB for inference (a chat may carry base64 images), 1 MiB for everything else
  (a registration, the largest management body, is a few KiB).
- uploads (multipart image and audio files): 64 MiB, which holds OpenAI's 25 MB audio files
  and its 4 MB images with room to spare.
- audio to transcribe: 3 hours once decoded (16 kHz float32 samples: 690 MB in the replica, the
  most that one request should hold); text to speak: 4096 characters, OpenAI's own cap.
- JSON values per body: 500,000; a body's parse costs CPU and memory per value, not per byte
  (a measurement: docs/benchmarks.md), and the largest legitimate bodies under the limits above
  (300,000 token ids) hold fewer.
- JSON nesting of a management body's free-form parts (a registered family, a launch's engine
  options): 32 levels. The built-in families nest 4 (family, specs, spec, quantizations); past
  about 255 pydantic can no longer serialize a value, so a deeper registration would be kept
  and then fail every listing and every restart that reads it."""

from __future__ import annotations

import functools
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.errors import BadRequest, FleetError, PayloadTooLarge

MIB = 1024 * 1024

# Replicas of one model (a launch's `replica`, and what scaling may add up to). Not a setting: it
# bounds the supervisor's planning, whose cost grows with the square of the count (each replica
# is placed knowing the ones before it), and 64 processes of one model is more than any cluster
# this serves has asked for. A saved state that asks for more is refused like a launch.
MAX_REPLICAS = 64


class RequestLimits(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_items: int = Field(default=2048, ge=1)
    max_messages: int = Field(default=2048, ge=1)
    max_n: int = Field(default=16, ge=1)
    max_stop: int = Field(default=16, ge=1)
    max_tools: int = Field(default=128, ge=1)
    # Images in one chat: each costs a decode and hundreds of prompt tokens or more.
    max_images: int = Field(default=16, ge=1)
    max_logit_bias: int = Field(default=1024, ge=1)
    max_request_tokens: int = Field(default=300_000, ge=1)
    max_body_bytes: int = Field(default=64 * MIB, ge=1024)
    max_management_body_bytes: int = Field(default=1 * MIB, ge=1024)
    max_upload_bytes: int = Field(default=64 * MIB, ge=1024)
    max_audio_seconds: int = Field(default=3 * 3600, ge=1)
    max_speech_chars: int = Field(default=4096, ge=1)
    max_json_values: int = Field(default=500_000, ge=1000)
    # At most 200: pydantic serializes about 255 levels, and a family adds a few of its own.
    max_json_depth: int = Field(default=32, ge=8, le=200)
    # The address space of the process that parses large bodies (fleet.api.body_parsing): a
    # body that needs more is refused there, and nothing else is touched.
    parser_memory_bytes: int = Field(default=2048 * MIB, ge=256 * MIB)
    # The time one large body's parse may take there (the largest legitimate bodies under the
    # other limits take under a second on two busy cores): past it, the parser is replaced.
    max_parse_seconds: int = Field(default=10, ge=1)


# The environment variable of each limit.
ENV_VARS: dict[str, str] = {
    "max_items": "FLEET_MAX_ITEMS",
    "max_messages": "FLEET_MAX_MESSAGES",
    "max_n": "FLEET_MAX_N",
    "max_stop": "FLEET_MAX_STOP",
    "max_tools": "FLEET_MAX_TOOLS",
    "max_images": "FLEET_MAX_IMAGES",
    "max_logit_bias": "FLEET_MAX_LOGIT_BIAS",
    "max_request_tokens": "FLEET_MAX_REQUEST_TOKENS",
    "max_body_bytes": "FLEET_MAX_BODY_BYTES",
    "max_management_body_bytes": "FLEET_MAX_MANAGEMENT_BODY_BYTES",
    "max_upload_bytes": "FLEET_MAX_UPLOAD_BYTES",
    "max_audio_seconds": "FLEET_MAX_AUDIO_SECONDS",
    "max_speech_chars": "FLEET_MAX_SPEECH_CHARS",
    "max_json_values": "FLEET_MAX_JSON_VALUES",
    "max_json_depth": "FLEET_MAX_JSON_DEPTH",
    "parser_memory_bytes": "FLEET_PARSER_MEMORY_BYTES",
    "max_parse_seconds": "FLEET_MAX_PARSE_SECONDS",
}


def read_limits(environ: dict[str, str] | os._Environ[str] = os.environ) -> RequestLimits:
    """The limits the environment sets (the defaults for what it leaves out); a value that is
    not a whole number in range stops the server at start with the variable's name."""
    given = {}
    for field, var in ENV_VARS.items():
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        try:
            given[field] = int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"{var}={raw!r} is not a whole number") from None
    try:
        return RequestLimits(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{ENV_VARS[str(e['loc'][0])]}={given[str(e['loc'][0])]}: {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"invalid request limit: {problems}") from None


@functools.cache
def limits() -> RequestLimits:
    """This process's limits, read once: every check is an attribute read."""
    return read_limits()


def exceeded(field: str, what: str, code: str = "limit_exceeded",
             error: type[FleetError] = BadRequest, value: int | None = None,
             advice: str = "") -> FleetError:
    """The refusal of a request past `field`'s limit (`value` when the caller was given its
    own): `what` says what the request holds ("input has 3000 items"); the message adds the
    limit and how to change it, then `advice` for the client."""
    value = getattr(limits(), field) if value is None else value
    return error(f"{what}, more than this server's limit of {value} "
                 f"({ENV_VARS[field]} on the server changes it)"
                 + (f"; {advice}" if advice else ""), code=code)


def check_count(field: str, count: int, what: str, code: str = "too_many_items") -> None:
    """Refuse `count` of something past `field`'s limit; an O(1) comparison."""
    if count > getattr(limits(), field):
        raise exceeded(field, f"{what} has {count} items", code)


def check_ids_or_items(value: Any, what: str) -> None:
    """An input that is a list: token ids count against the tokens a request may queue, any
    other list (texts, or lists of ids) against the items per request."""
    if isinstance(value, list) and value and isinstance(value[0], int):
        if len(value) > limits().max_request_tokens:
            raise exceeded("max_request_tokens", f"{what} has {len(value)} token ids",
                           "too_many_tokens")
    elif isinstance(value, list):
        check_count("max_items", len(value), what)


def json_depth(value: Any) -> int:
    """Levels of nesting of a parsed JSON value: 0 for a scalar, 1 for `{}` or a list of numbers, 2 for
    `{"a": []}`. Iterative, so that no depth can exhaust Python's stack; O(values)."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def check_depth(value: Any, what: str) -> None:
    """Refuse a free-form JSON value nested deeper than max_json_depth (a management body's:
    this walks every value, which the hot paths need not do)."""
    depth = json_depth(value)
    if depth > limits().max_json_depth:
        raise exceeded("max_json_depth", f"{what} is nested {depth} levels deep", "too_deep")


def too_large(field: str, size: int, cap: int | None = None) -> FleetError:
    """The 413 for a body of `size` bytes (or more: the rest was not read) past `field`."""
    return exceeded(field, f"the request body has {size} bytes or more", "payload_too_large",
                    PayloadTooLarge, cap)


def schema_max(field: str) -> object:
    """`json_schema_extra` that documents `field`'s limit as a maximum (read when the OpenAPI
    document is built, so it shows the server's own values)."""
    def update(schema: dict) -> None:
        schema["maximum"] = getattr(limits(), field)
    return update


def schema_max_items(field: str) -> object:
    """`json_schema_extra` that documents `field`'s limit as maxItems (see schema_max)."""
    def update(schema: dict) -> None:
        schema["maxItems"] = getattr(limits(), field)
    return update


def estimated_tokens(item: str | list[int]) -> int:
    """Tokens in an input without tokenizing it: exact for token ids, about a quarter of the
    characters for text (English runs at about four characters a token with the tokenizers of
    the catalogue's models). O(1): it is computed per item on the hot path."""
    return len(item) // 4 + 2 if isinstance(item, str) else len(item)


def check_request_tokens(tokens: int, what: str) -> None:
    """Refuse a request that would queue more than max_request_tokens; `what` says how the
    count was made ("input holds about 400000 tokens (characters / 4)")."""
    if tokens > limits().max_request_tokens:
        raise exceeded("max_request_tokens", what, "too_many_tokens")
