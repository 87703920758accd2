"""Images in a chat on llama.cpp: a GGUF model with its vision projector (mmproj), read by
llama.cpp's mtmd. Used by fleet.engines.llamacpp_llm.

The replica's LLM service writes llama.cpp's media marker in each image's place in the chat and
renders the template (BaseLLMEngine.image_marker); llama.cpp's completion then takes the
rendered text with the images (`{"prompt_string", "multimodal_data"}`), splits it at the markers,
tokenizes the text between them and encodes each image into a run of embeddings. The marker is
the server's own, drawn at random when it starts, so no text a user writes can pass for an image.

What a request's prompt holds in tokens must be known before it runs (its usage, the context
check). llama.cpp's tokenizer route reads text only, but its token count of a chat request
(/v1/chat/completions/input_tokens) reads images the way a completion does, without encoding
them; an image's tokens are that count for a chat of one image less the count of the same chat
empty (measured once at load). The prompt's text is tokenized piece by piece, between the
markers, as mtmd does. The ids given back hold IMAGE_TOKEN for each image token: they are only
counted; the scheduler sends llama.cpp the text and the images (LlamaCppMedia)."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fleet.engines.base import ImagePrompt
from fleet.engines.llamacpp_server import LlamaCppRefusal, LlamaServer
from fleet.errors import BadRequest

logger = logging.getLogger(__name__)

# Stands for one image token in a prompt's ids (llama.cpp's LLAMA_TOKEN_NULL): never sent.
IMAGE_TOKEN = -1
_COUNT_ROUTE = "/v1/chat/completions/input_tokens"
# A word no template changes, to find where a chat template puts a message's content.
_SLOT = "FleetContentSlot"
# llama.cpp decodes the bytes by their content; its data URLs only have to say "image".
_DATA_URL = "data:image/png;base64,"

Tokenize = Callable[[str, bool], list[int]]
# What llama.cpp's image decoder (stb_image) reads: PNG, JPEG, GIF. The API takes WebP too.
_DECODED_BY_LLAMA_CPP = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8")


def readable(image: bytes, index: int) -> bytes:
    """The image in a format llama.cpp decodes: as it is, or, for one it does not (WebP),
    decoded here and written as PNG."""
    if image.startswith(_DECODED_BY_LLAMA_CPP):
        return image
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image)) as picture:
            converted = io.BytesIO()
            picture.convert("RGB").save(converted, "PNG")
    except (OSError, ValueError) as exc:  # Pillow's UnidentifiedImageError is an OSError
        raise BadRequest(f"image {index + 1} could not be read: {exc}",
                         code="invalid_image") from None
    return converted.getvalue()


@dataclass(frozen=True)
class LlamaCppMedia:
    """A prompt with images as llama.cpp's completion takes it: the text with the server's media
    marker in each image's place (ImagePrompt.media, read by fleet.engines.llamacpp_scheduler)."""

    prompt: str
    images: list[str]  # base64, in the order of the markers

    def completion_prompt(self) -> dict[str, Any]:
        return {"prompt_string": self.prompt, "multimodal_data": self.images}


class ImageReader:
    """Turns a rendered chat prompt with images into an ImagePrompt, counted as llama.cpp will."""

    def __init__(self, server: LlamaServer, tokenize: Tokenize, marker: str, bos_text: str):
        self._server = server
        self._tokenize = tokenize
        self.marker = marker
        # What llama.cpp's tokenizer adds to a whole prompt (bos...): its completion tokenizes
        # a prompt with images that way, where Fleet's ids of a chat come from the template's
        # own text alone.
        self._added = tokenize("", True)
        # So a template's leading bos text is taken out of the prompt when llama.cpp adds the
        # token itself, or the model would read two (llama.cpp's own chat does the same).
        adds_bos = bool(bos_text) and tokenize(bos_text, False) == self._added[:1]
        self._bos_text = bos_text if adds_bos else ""
        self._empty_chat = self._count("")
        self._seam = self._template_seam()

    def _count(self, content: str | list[dict[str, Any]]) -> int:
        answer = self._server.post(_COUNT_ROUTE,
                                   {"messages": [{"role": "user", "content": content}]})
        return int(answer["input_tokens"])

    def _template_seam(self) -> int:
        """Tokens the text around a message's content loses when cut at an image, as mtmd cuts
        it: two pieces may tokenize to more tokens than the whole (a merge across the cut).
        Almost always 0 (a special token follows the content)."""
        rendered = self._server.post("/apply-template", {
            "messages": [{"role": "user", "content": _SLOT}]}).get("prompt", "")
        if rendered.count(_SLOT) != 1:
            return 0
        before, after = rendered.split(_SLOT)
        whole = len(self._tokenize(before + after, False))
        return len(self._tokenize(before, False)) + len(self._tokenize(after, False)) - whole

    def image_tokens(self, image: str, index: int) -> int:
        """The tokens llama.cpp reads for one image (base64), text it wraps the image in
        included; BadRequest when it cannot read the image."""
        content = [{"type": "image_url", "image_url": {"url": _DATA_URL + image}}]
        try:
            counted = self._count(content)
        except LlamaCppRefusal as exc:
            raise BadRequest(f"image {index + 1} could not be read: {exc.message}",
                             code="invalid_image") from None
        return counted - self._empty_chat - self._seam

    def read(self, text: str, images: list[bytes]) -> ImagePrompt:
        pieces = text.split(self.marker)
        if len(pieces) != len(images) + 1:
            # The service writes one marker per image; any other count is its error.
            raise ValueError(f"the prompt holds {len(pieces) - 1} image markers for "
                             f"{len(images)} images")
        if self._bos_text and pieces[0].startswith(self._bos_text):
            pieces[0] = pieces[0][len(self._bos_text):]
        encoded = [base64.b64encode(readable(image, index)).decode("ascii")
                   for index, image in enumerate(images)]
        ids = list(self._added)
        for index, piece in enumerate(pieces):
            if piece:
                ids += self._tokenize(piece, False)
            if index < len(encoded):
                ids += [IMAGE_TOKEN] * self.image_tokens(encoded[index], index)
        return ImagePrompt(ids, LlamaCppMedia(self.marker.join(pieces), encoded))
