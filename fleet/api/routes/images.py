"""Image routes, OpenAI's and Xinference's: generations (JSON), edits and variations (OpenAI's
multipart uploads: image-to-image, and inpainting when a mask comes), Xinference's inpainting
and OCR, the files behind `url` answers, and the progress of a named request.

The routes validate and convert; the replica's service (fleet.cluster.replica.services.image,
fleet.cluster.replica.services.ocr) runs the pipeline, and says when a model cannot do what was asked
(a size it cannot make, a mask of another size, a corrupt image)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from fleet.api import metering
from fleet.api.auth.middleware import check_model
from fleet.api.image_files import ImageFileStore
from fleet.api.openapi import FileField, multipart_body
from fleet.api.protocol.image_uploads import ImageUpload, read_upload
from fleet.api.protocol.images import (
    IGNORED_FIELDS,
    EditForm,
    ImageForm,
    ImageGenerationRequest,
    OcrForm,
    check_n,
    engine_request,
    parse_kwargs,
    split_options,
)
from fleet.api.request_progress import RequestTable
from fleet.cluster.deadlines import within
from fleet.errors import BadRequest, NotFound
from fleet.settings import control_call_timeout_s, fleet_home, image_url_ttl_s

router = APIRouter()
FILES_PATH = "/v1/images/files"
_JSON = "application/json"
# Options the OCR route reads itself (Xinference's): the rest go to the OCR service.
_OCR_API_OPTIONS = ("return_dict", "request_id")
_IMAGE_TYPES = "image/png, image/jpeg, image/webp"
_IMAGE = FileField("a PNG, JPEG or WebP image (also accepted as image[], images, images[])",
                   required=True, media_types=_IMAGE_TYPES)


def _mask(name: str, required: bool) -> FileField:
    other = "mask" if name == "mask_image" else "mask_image"
    return FileField(f"white where the image is repainted, black where it is kept (also: "
                     f"{other})", required=required, media_types=_IMAGE_TYPES)


def _state(request: Request, name: str, make: Any) -> Any:
    """An object the image routes keep on the application, made on first use."""
    value = getattr(request.app.state, name, None)
    if value is None:
        value = make()
        setattr(request.app.state, name, value)
    return value


def _files(request: Request) -> ImageFileStore:
    return _state(request, "image_files",
                  lambda: ImageFileStore(fleet_home() / "images", image_url_ttl_s()))


def _requests(request: Request) -> RequestTable:
    return _state(request, "named_requests", RequestTable)


async def _run_images(request: Request, model: str, operation: str, job: dict[str, Any],
                      request_id: str | None, response_format: str) -> Response:
    """Runs the job on the model's next replica, and answers in OpenAI's shape."""
    check_model(request.scope, model)  # a key limited to some models (fleet.api.auth.middleware)
    cluster = request.app.state.cluster
    with _requests(request).running(request_id, model):
        images = await cluster.router.call(model, "images", "call_service", "images",
                                           operation, job, request_id)
    metering.made_images(len(images))
    if response_format == "b64_json":
        data = [{"b64_json": base64.b64encode(png).decode("ascii")} for png in images]
    else:
        base = str(request.base_url).rstrip("/")
        data = [{"url": f"{base}{FILES_PATH}/{name}"}
                for name in await _files(request).save(images)]
    return Response(orjson.dumps({"created": int(time.time()), "data": data}), media_type=_JSON)


@router.post("/v1/images/generations")
async def create_images(request: Request, body: ImageGenerationRequest) -> Response:
    """Text to image (OpenAI's body; `negative_prompt`, `num_inference_steps`,
    `guidance_scale`, `seed` and Xinference's `kwargs` besides)."""
    check_n(body.n)
    options, extra = split_options(body, parse_kwargs(body.kwargs))
    job = engine_request(body.prompt, body.n, body.size, options, extra)
    return await _run_images(request, body.model, "text2image", job, options.request_id,
                             body.response_format)


def _image_form(upload: ImageUpload, form_class: type[ImageForm]) -> ImageForm:
    fields = {k: v for k, v in upload.fields.items() if k not in IGNORED_FIELDS}
    form = form_class.model_validate(fields)  # a ValidationError is a 400 naming the field
    check_n(form.n)
    return form


async def _upload_images(request: Request, upload: ImageUpload, operation: str,
                         form_class: type[ImageForm] = ImageForm) -> Response:
    form = _image_form(upload, form_class)
    options, extra = split_options(form, parse_kwargs(form.kwargs))
    job = engine_request(form.prompt, form.n, form.size, options, extra)
    job["image"] = upload.one_image()
    if operation == "inpainting":
        job["mask_image"] = upload.mask
    return await _run_images(request, form.model, operation, job, options.request_id,
                             form.response_format)


@router.post("/v1/images/edits", openapi_extra=multipart_body(
    EditForm, {"image": _IMAGE, "mask": _mask("mask", required=False)}))
async def edit_images(request: Request) -> Response:
    """OpenAI's edits (multipart): `image` and `prompt`, inpainting when a `mask` comes."""
    upload = await read_upload(request)
    if not upload.fields.get("prompt"):  # EditForm requires it too; this says it plainly
        raise BadRequest("prompt is required", code="missing_prompt")
    return await _upload_images(request, upload,
                                "inpainting" if upload.mask is not None else "image2image",
                                EditForm)


@router.post("/v1/images/variations", openapi_extra=multipart_body(ImageForm, {"image": _IMAGE}))
async def create_variations(request: Request) -> Response:
    """Image to image (OpenAI's variations, multipart; Xinference's client sends `prompt`
    and `kwargs` besides)."""
    upload = await read_upload(request)
    if upload.mask is not None:
        raise BadRequest("variations take no mask; send it to /v1/images/edits or "
                         "/v1/images/inpainting", code="unexpected_mask")
    return await _upload_images(request, upload, "image2image")


@router.post("/v1/images/inpainting", openapi_extra=multipart_body(
    ImageForm, {"image": _IMAGE, "mask_image": _mask("mask_image", required=True)}))
async def inpaint_images(request: Request) -> Response:
    """Xinference's inpainting (multipart): `image`, `mask_image` (white: repaint), `prompt`."""
    upload = await read_upload(request)
    if upload.mask is None:
        raise BadRequest("inpainting needs a mask_image file", code="missing_mask")
    return await _upload_images(request, upload, "inpainting")


@router.post("/v1/images/ocr", openapi_extra=multipart_body(OcrForm, {"image": _IMAGE}))
async def ocr_image(request: Request) -> Response:
    """Xinference's OCR (multipart `image`, `kwargs`): the text, lines joined by newlines, as
    a JSON string; with `return_dict` in kwargs, `{"task": "ocr", "lines": [{"text", "score",
    "box"}]}`, as Xinference's OCR models answer."""
    upload = await read_upload(request)
    form = OcrForm.model_validate(upload.fields)  # a ValidationError is a 400 naming the field
    check_model(request.scope, form.model)
    options = parse_kwargs(form.kwargs)
    return_dict = bool(options.get("return_dict", False))
    options = {k: v for k, v in options.items() if k not in _OCR_API_OPTIONS}
    lines = await request.app.state.cluster.router.call(
        form.model, "ocr", "call_service", "ocr", upload.one_image(), options)
    payload: Any = ({"task": "ocr", "lines": lines} if return_dict
                    else "\n".join(line["text"] for line in lines))
    return Response(orjson.dumps(payload), media_type=_JSON)


@router.get(FILES_PATH + "/{name}", response_class=Response, responses={200: {
    "description": "The PNG image",
    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}})
async def image_file(request: Request, name: str) -> Response:
    """An image of a `url` answer, while it is kept (FLEET_IMAGE_URL_TTL_S)."""
    return Response(await _files(request).read(name), media_type="image/png",
                    headers={"cache-control": "private, max-age=60"})


async def _replica_progress(replica: Any, request_id: str) -> float | None:
    try:
        return await within(replica.ref.call_service("progress", request_id),
                            control_call_timeout_s(), f"replica {replica.replica_uid}")
    except Exception:  # a replica gone or busy loading knows nothing of the request
        return None


@router.get("/v1/requests/{request_id}/progress")
async def request_progress(request: Request, request_id: str) -> dict[str, float]:
    """Xinference's progress of a request named by its `request_id`: 0.0 to 1.0."""
    tracked = _requests(request).get(request_id)
    if tracked is None:
        raise NotFound(f"no request {request_id!r} is running or finished recently",
                       code="request_not_found")
    check_model(request.scope, tracked.model_uid)
    if tracked.finished_at is not None:
        return {"progress": 1.0}
    replicas = await request.app.state.cluster.router.replicas_of(tracked.model_uid)
    answers = await asyncio.gather(*(_replica_progress(r, request_id) for r in replicas))
    known = [a for a in answers if a is not None]
    return {"progress": max(known) if known else 0.0}  # not started yet: queued
