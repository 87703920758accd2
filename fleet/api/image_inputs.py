"""The images that chat requests carry, from the client's reference to checked image bytes:
OpenAI's `image_url` parts and the Responses API's `input_image` (a data: URL or an http(s)
URL: `resolve_image`), and Anthropic's image blocks (base64 with a media type:
`image_from_base64`; a URL source: `resolve_image`).

An image is taken when it is PNG, JPEG, WebP or GIF (its first frame is what a model sees),
whatever type the client declared: the format is read from the bytes themselves, and a
declared type that differs from them gives way to them. Each image is opened with Pillow
(only those four decoders, never the others it ships) and decoded, so what reaches an engine
is an image Pillow reads, within the caps of fleet.api.image_policy.ImageLimits. Its size in
pixels is read from the header and checked before any pixel is decoded, so a small file that
claims a huge picture (a decompression bomb) costs nothing.

Errors are fleet.errors.BadRequest (400), each message starting with `where`, the place in
the request ("messages[0].content[1].image_url.url"), with these codes:

- `invalid_image`: not base64, not a data: or http(s) URL, a media type that is not one of the
  four formats (SVG, text...), bytes that are not one of them or that Pillow cannot read;
- `image_too_large`: more bytes or pixels than the caps (FLEET_IMAGE_MAX_BYTES,
  FLEET_IMAGE_MAX_PIXELS);
- `image_url_not_allowed`, `image_fetch_failed`: an http(s) URL the server may not or could
  not fetch (fleet.api.image_fetch).

Decoding takes CPU in proportion to the pixels: `resolve_image` does it in a thread; callers
of the synchronous functions with large images should too."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
from dataclasses import dataclass

from fleet.api.image_fetch import fetch_image_bytes
from fleet.api.image_policy import ImageLimits, ImageUrlPolicy
from fleet.errors import BadRequest

__all__ = ["ImageInput", "ImageLimits", "ImageUrlPolicy", "image_from_base64", "image_from_bytes",
           "image_from_data_url", "resolve_image"]

# The formats taken, by media type: Pillow's name for each, and how its files begin.
_PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP",
                   "image/gif": "GIF"}
_DECLARED_ALIASES = {"image/jpg": "image/jpeg"}  # seen from clients
_NAMES = "PNG, JPEG, WebP or GIF"


@dataclass(frozen=True, slots=True)
class ImageInput:
    """A checked image: its bytes as the client sent them (encoded; a model's processor decodes
    them again), the media type they really are, and its size in pixels."""

    data: bytes
    media_type: str
    width: int
    height: int


def _invalid(where: str, why: str) -> BadRequest:
    return BadRequest(f"{where}: {why}", code="invalid_image")


def _too_large(where: str, why: str) -> BadRequest:
    return BadRequest(f"{where}: {why}", code="image_too_large")


def sniff_media_type(data: bytes) -> str | None:
    """The media type that the bytes' own signature says, among the four taken; None if none."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def _check_declared(media_type: str | None, where: str) -> None:
    """A declared type must at least be one of the four: an SVG (a document that can run
    scripts and fetch URLs) or a text is refused even if its bytes happen to be a PNG."""
    if not media_type:
        return
    declared = media_type.strip().lower()
    declared = _DECLARED_ALIASES.get(declared, declared)
    if declared in _PILLOW_FORMATS:
        return
    if declared.startswith("image/"):
        raise _invalid(where, f"{declared} images are not supported; send {_NAMES}")
    raise _invalid(where, f"{declared!r} is not an image media type; send {_NAMES}")


def _decode_checked(data: bytes, media_type: str, where: str, limits: ImageLimits) -> tuple[int, int]:
    """Width and height, after Pillow has read the header, checked the size and decoded the
    first frame; any failure of Pillow's is the client's bytes, and a 400."""
    from PIL import Image

    try:
        # formats=: only the decoder the signature named, never one of the others Pillow ships.
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[media_type]]) as image:
            width, height = image.size
            if width * height > limits.max_pixels:
                raise _too_large(where, f"the image is {width}x{height} pixels, more than the "
                                        f"{limits.max_pixels} taken (FLEET_IMAGE_MAX_PIXELS)")
            image.verify()  # the file's own checks (PNG's chunk CRCs); leaves it unusable
        with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[media_type]]) as image:
            image.load()  # the pixels of the first frame: a truncated or corrupt file fails here
    except BadRequest:
        raise
    except Image.DecompressionBombError:  # Pillow's own cap, where ours is set higher
        raise _too_large(where, f"the image has more than {limits.max_pixels} pixels "
                                "(FLEET_IMAGE_MAX_PIXELS)") from None
    except Exception as exc:  # Pillow's decoders raise many kinds of errors on broken input
        raise _invalid(where, f"not a readable {_PILLOW_FORMATS[media_type]} image "
                              f"({type(exc).__name__}: {exc})") from None
    return width, height


def image_from_bytes(data: bytes, media_type: str | None, where: str,
                     limits: ImageLimits | None = None) -> ImageInput:
    """The image in `data`, checked; `media_type`: what the client declared, if anything."""
    limits = limits or ImageLimits.from_settings()
    _check_declared(media_type, where)
    if len(data) > limits.max_bytes:
        raise _too_large(where, f"the image is {len(data)} bytes, more than the "
                                f"{limits.max_bytes} taken (FLEET_IMAGE_MAX_BYTES)")
    if not data:
        raise _invalid(where, "the image is empty")
    real = sniff_media_type(data)
    if real is None:
        raise _invalid(where, f"not a {_NAMES} image")
    width, height = _decode_checked(data, real, where, limits)
    return ImageInput(data=data, media_type=real, width=width, height=height)


def _decode_base64(text: str, where: str, limits: ImageLimits) -> bytes:
    # Refused by its length before it is decoded: 4 characters carry 3 bytes.
    if len(text) // 4 * 3 - 2 > limits.max_bytes:
        raise _too_large(where, f"the image is more than {limits.max_bytes} bytes "
                                "(FLEET_IMAGE_MAX_BYTES)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _invalid(where, f"the image is not valid base64 ({exc})") from None


def image_from_base64(data: str, media_type: str | None, where: str,
                      limits: ImageLimits | None = None) -> ImageInput:
    """An image sent as base64 with its media type (Anthropic's `source.type: base64`)."""
    limits = limits or ImageLimits.from_settings()
    _check_declared(media_type, where)
    return image_from_bytes(_decode_base64(data, where, limits), media_type, where, limits)


def image_from_data_url(url: str, where: str, limits: ImageLimits | None = None) -> ImageInput:
    """An image sent as a data: URL, `data:image/png;base64,...` (RFC 2397; base64 only)."""
    limits = limits or ImageLimits.from_settings()
    header, comma, payload = url.partition(",")
    if not header[:5].lower() == "data:" or not comma:
        raise _invalid(where, "not a data: URL (data:image/png;base64,...)")
    media_type, *parameters = header[5:].split(";")
    _check_declared(media_type, where)  # an SVG is refused as such, base64 or not
    if not parameters or parameters[-1].strip().lower() != "base64":
        raise _invalid(where, "a data: URL image must be base64 (data:image/png;base64,...)")
    return image_from_base64(payload, media_type or None, where, limits)


async def resolve_image(reference: str, where: str, policy: ImageUrlPolicy) -> ImageInput:
    """The image a reference names: a data: URL, or an http(s) URL fetched under the policy
    (refused unless the operator allows URLs). Decoding runs in a thread."""
    if reference[:5].lower() == "data:":
        return await asyncio.to_thread(image_from_data_url, reference, where, policy.limits)
    if "://" not in reference:
        raise _invalid(where, "an image is a data: URL (data:image/png;base64,...) or an "
                              "http(s) URL")
    data = await fetch_image_bytes(reference, where, policy)
    return await asyncio.to_thread(image_from_bytes, data, None, where, policy.limits)
