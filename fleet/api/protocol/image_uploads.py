"""The multipart bodies of the image routes, read the way each client sends them: the openai
SDK names its file `image` (`image[]` for a list) and `mask`; Xinference's client `image`
(repeated for a list), `images` / `images[]` (its image_edit) and `mask_image` (its inpainting).
Uploads are checked to be PNG, JPEG or WebP by their first bytes, here, so that a wrong file is
refused before it travels to a replica; a file that starts right but is corrupt further on is
the replica's decoder's to refuse (also a 400)."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.datastructures import UploadFile
from starlette.requests import Request

from fleet.errors import BadRequest

IMAGE_FIELDS = frozenset({"image", "image[]", "images", "images[]"})
MASK_FIELDS = frozenset({"mask", "mask_image"})
MAX_FORM_FIELDS = 64
MAX_FORM_FILES = 16


def image_kind(data: bytes) -> str | None:
    """'png', 'jpeg' or 'webp' from a file's first bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def checked_image(data: bytes, what: str) -> bytes:
    if not data:
        raise BadRequest(f"{what} is an empty file", code="invalid_image")
    if image_kind(data) is None:
        raise BadRequest(f"{what} is not a PNG, JPEG or WebP image", code="invalid_image")
    return data


@dataclass
class ImageUpload:
    fields: dict[str, str] = field(default_factory=dict)
    images: list[bytes] = field(default_factory=list)
    mask: bytes | None = None

    def one_image(self) -> bytes:
        """The uploaded image; a request with none, or with several (reference images, which
        the diffusion pipelines served here cannot take), is refused."""
        if not self.images:
            raise BadRequest("the form has no image file (field 'image')", code="missing_image")
        if len(self.images) > 1:
            raise BadRequest(f"the form has {len(self.images)} images; this model takes one",
                             code="too_many_images")
        return self.images[0]


async def read_upload(request: Request) -> ImageUpload:
    """The form's text fields and its image and mask files, each image checked."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("this route takes a multipart/form-data body (the image as a file)",
                         code="invalid_content_type")
    try:
        form = await request.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS)
    except Exception as exc:  # python-multipart's and Starlette's parse errors
        raise BadRequest(f"the multipart body could not be read: {exc}",
                         code="invalid_multipart") from None
    upload = ImageUpload()
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                await _add_file(upload, name, value)
            elif name in IMAGE_FIELDS or name in MASK_FIELDS:
                raise BadRequest(f"{name} must be a file, not a text field", code="invalid_image")
            else:
                upload.fields[name] = value
    finally:
        await form.close()
    return upload


async def _add_file(upload: ImageUpload, name: str, file: UploadFile) -> None:
    data = await file.read()
    if name in IMAGE_FIELDS:
        upload.images.append(checked_image(data, f"{name} ({file.filename or 'upload'})"))
    elif name in MASK_FIELDS:
        if upload.mask is not None:
            raise BadRequest("the form has more than one mask", code="invalid_image")
        upload.mask = checked_image(data, f"{name} ({file.filename or 'upload'})")
    else:
        raise BadRequest(f"unexpected file field {name!r} (expected 'image' and 'mask')",
                         code="unexpected_file")
