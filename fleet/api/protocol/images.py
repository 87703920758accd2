"""Request bodies of the image routes, validated at the edge: OpenAI's JSON body for
generations, the multipart forms of edits, variations, inpainting and OCR (OpenAI's field names
and Xinference's), and Xinference's `kwargs` (a JSON string of further generate arguments that
its client always sends)."""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleet.api.protocol.fields import JsonObjectText
from fleet.errors import BadRequest
from fleet.limits import exceeded, limits, schema_max

# Each side of an asked size: wide enough for any diffusion model, small enough that one image
# cannot ask a replica for more memory than exists (16384 x 16384 x 4 bytes is already 1 GiB).
MAX_SIDE = 8192
MAX_PROMPT_CHARS = 32_000  # OpenAI's own cap on image prompts
MAX_STEPS = 1000  # a scheduler's whole training schedule; more steps than that mean nothing
_SIZE = re.compile(r"\s*(\d{1,5})\s*[x*X×]\s*(\d{1,5})\s*")
# What the document shows of a size: each side 1 to MAX_SIDE, no leading zeros; parse_size
# also takes spaces, leading zeros and "" (the default), and says in its words what is wrong.
_SIDE = r"([1-9][0-9]{0,2}|[1-7][0-9]{3}|80[0-9]{2}|81[0-8][0-9]|819[0-2])"
SIZE_DOC = {"pattern": f"^(auto|original|{_SIDE}[x*X×]{_SIDE})$",
            "description": "'WxH' (or Xinference's 'W*H'), each side 1 to 8192; 'auto' or "
                           "absent: the model's default size"}
# A request id names a running request in the progress route's path.
_REQUEST_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

# OpenAI fields that change nothing here and are accepted so that a client that always sends
# them works: `user` (an end-user id), `quality` and `style` (DALL-E's knobs, with no diffusers
# counterpart), `moderation`. Anything else unknown is refused, naming it.
IGNORED_FIELDS = frozenset({"user", "quality", "style", "moderation"})
KWARGS = "Xinference's further generate arguments: a JSON object as a string"


class ImageOptions(BaseModel):
    """The generate arguments that every image route takes, from the body's own fields or from
    Xinference's `kwargs`."""

    model_config = ConfigDict(extra="forbid")

    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    num_inference_steps: int | None = Field(default=None, ge=1, le=MAX_STEPS)
    guidance_scale: float | None = Field(default=None, ge=0, le=100)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    strength: float | None = Field(default=None, gt=0, le=1)
    request_id: str | None = Field(default=None, pattern=_REQUEST_ID)


class ImageGenerationRequest(ImageOptions):
    """OpenAI's `POST /v1/images/generations`, with Fleet's and Xinference's additions."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(min_length=1)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int = Field(default=1, ge=1, json_schema_extra=schema_max("max_n"))
    size: str | None = Field(default=None, json_schema_extra=SIZE_DOC)
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png"] | None = None
    kwargs: JsonObjectText | None = Field(default=None, description=KWARGS)
    user: str | None = None
    quality: str | None = None
    style: str | None = None
    moderation: str | None = None


class ImageForm(ImageOptions):
    """The text fields of the multipart image routes (edits, variations, inpainting)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(min_length=1)
    prompt: str = Field(default="", max_length=MAX_PROMPT_CHARS)
    n: int = Field(default=1, ge=1, json_schema_extra=schema_max("max_n"))
    size: str | None = Field(default=None, json_schema_extra=SIZE_DOC)
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png"] | None = None
    kwargs: JsonObjectText | None = Field(default=None, description=KWARGS)


class EditForm(ImageForm):
    """OpenAI's edits: the same fields, and a prompt."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)


class OcrForm(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(min_length=1)
    kwargs: JsonObjectText | None = Field(default=None, description=KWARGS)


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    """(width, height) of 'WxH' or 'W*H'; (None, None) for no size or 'auto' (the model's
    default). Whether the model can make that size is the replica's to say."""
    if size is None or size.strip() in ("", "auto", "original"):
        return None, None
    found = _SIZE.fullmatch(size)
    if found is None:
        raise BadRequest(f"size {size!r} is not WIDTHxHEIGHT (for example 512x512)",
                         code="invalid_size")
    width, height = int(found.group(1)), int(found.group(2))
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise BadRequest(f"size {size!r}: each side must be between 1 and {MAX_SIDE} pixels",
                         code="invalid_size")
    return width, height


def check_n(n: int) -> None:
    if n > limits().max_n:
        raise exceeded("max_n", f"n is {n}", "too_many_images")


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """Xinference's `kwargs`: a JSON object as a string ('null' and '' are no arguments)."""
    if text is None or not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"kwargs is not valid JSON: {exc}", code="invalid_kwargs") from None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"kwargs must be a JSON object, not {type(value).__name__}",
                         code="invalid_kwargs")
    return value


def split_options(body: ImageOptions, kwargs: dict[str, Any]) -> tuple[ImageOptions, dict]:
    """The body's options with those that `kwargs` names (validated the same way: a bad value
    there is a 400 naming it), and the rest of `kwargs`: further pipeline arguments, which the
    replica accepts or refuses by name."""
    known = {k: v for k, v in kwargs.items() if k in ImageOptions.model_fields}
    extra = {k: v for k, v in kwargs.items() if k not in ImageOptions.model_fields}
    if not known:
        return body, extra
    merged = {**body.model_dump(include=set(ImageOptions.model_fields), exclude_none=True),
              **known}
    try:
        return ImageOptions.model_validate(merged), extra
    except ValidationError as exc:
        problems = "; ".join(f"kwargs.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise BadRequest(f"invalid request: {problems}", code="invalid_kwargs") from None


def engine_request(prompt: str, n: int, size: str | None, options: ImageOptions,
                   extra: dict[str, Any]) -> dict[str, Any]:
    """The ImageService's request dict (fleet.cluster.replica.services.image), images not yet added."""
    width, height = parse_size(size)
    return {
        "prompt": prompt, "negative_prompt": options.negative_prompt, "n": n,
        "width": width, "height": height,
        "num_inference_steps": options.num_inference_steps,
        "guidance_scale": options.guidance_scale, "seed": options.seed,
        "strength": options.strength, "extra": extra,
    }
