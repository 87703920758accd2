"""The images of a chat, read at the API: OpenAI's `image_url` parts (the Messages and Responses
APIs' image blocks arrive as these, fleet.api.anthropic.to_chat and fleet.api.responses.to_chat)
become checked image bytes that travel with the call (`GenerationCall.images`), each part
replaced by `{"type": "image"}`, which marks the image's place for the replica's chat template.

Here, not on the replica, because the rules are the operator's and the API's: a model without
the vision ability refuses an image before anything is read or fetched; the images of one chat
are capped in number (FLEET_MAX_IMAGES) and each in bytes and pixels; a URL is fetched only as
the operator allows (fleet.api.image_inputs). A chat without image parts costs one look at each
message's content."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import msgspec

from fleet.api.image_inputs import resolve_image
from fleet.errors import BadRequest
from fleet.generation.chat_template import IMAGE_PART
from fleet.limits import exceeded, limits
from fleet.messages import GenerationCall

if TYPE_CHECKING:
    from fleet.api.cluster_handle import ClusterHandle

IMAGE_PART_TYPE = "image_url"


def image_places(messages: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(message, part) of each image part, in order. Parts of other types are left to the
    template's own checks (fleet.generation.chat_template), but for the one that marks an
    image's place once its image is read: a client may not send that mark without an image."""
    places = []
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for position, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == IMAGE_PART_TYPE:
                places.append((index, position))
            elif kind == IMAGE_PART["type"]:
                raise BadRequest(f"{_where(index, position)}: a part of type 'image' names no "
                                 "image; send {\"type\": \"image_url\", \"image_url\": "
                                 "{\"url\": ...}}", code="invalid_image")
    return places


async def with_images(cluster: ClusterHandle, model: str, call: GenerationCall
                      ) -> GenerationCall:
    """`call` with its chat's images read and checked (the call itself when it has none)."""
    messages = call.messages or []
    places = image_places(messages)
    if not places:
        return call
    first = _where(*places[0])
    if "vision" not in await cluster.router.abilities(model):
        raise BadRequest(f"{first}: model {model!r} has no vision ability: it reads text only, "
                         "and cannot take an image", code="no_vision")
    if len(places) > limits().max_images:
        raise exceeded("max_images", f"{len(places)} images", "too_many_images")
    references = [_reference(messages[index]["content"][position], _where(index, position))
                  for index, position in places]
    images = await asyncio.gather(*(resolve_image(reference, where, cluster.image_policy)
                                    for reference, where in references))
    rewritten = [dict(message) for message in messages]
    for index, position in places:
        parts = rewritten[index]["content"] = list(rewritten[index]["content"])
        parts[position] = IMAGE_PART
    return msgspec.structs.replace(call, messages=rewritten,
                                   images=[image.data for image in images])


def _where(index: int, position: int) -> str:
    return f"messages[{index}].content[{position}]"


def _reference(part: dict[str, Any], where: str) -> tuple[str, str]:
    """An `image_url` part's URL (OpenAI's object, or the bare string some clients send)."""
    value = part.get("image_url")
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.image_url: expected {{\"url\": \"data:image/...;base64,...\" or "
                         "\"https://...\"}", code="invalid_image")
    if isinstance(value, dict):
        detail = value.get("detail")
        if detail not in (None, "auto", "low", "high"):
            raise BadRequest(f"{where}.image_url.detail: expected auto, low or high",
                             code="invalid_image")
    return url, f"{where}.image_url.url"
