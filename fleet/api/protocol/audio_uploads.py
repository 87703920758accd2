"""The multipart body of the transcription routes: the audio as the `file` field (the openai
SDK's and xinference-client's name), text fields beside it. List fields come as repeated
`name[]` fields (`timestamp_granularities[]`, `include[]`), as both clients send them. Whether
the file is audio is the replica's decoder's to say (FFmpeg reads dozens of containers; a
first-bytes check here would refuse some of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from fleet.errors import BadRequest

MAX_FORM_FIELDS = 64
LIST_FIELDS = frozenset({"timestamp_granularities", "include"})


@dataclass
class AudioUpload:
    fields: dict[str, Any] = field(default_factory=dict)
    audio: bytes = b""


async def read_audio_upload(request: Request) -> AudioUpload:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("this route takes a multipart/form-data body (the audio as the file "
                         "field 'file')", code="invalid_content_type")
    try:
        form = await request.form(max_files=1, max_fields=MAX_FORM_FIELDS)
    except Exception as exc:  # python-multipart's and Starlette's parse errors
        raise BadRequest(f"the multipart body could not be read: {exc}",
                         code="invalid_multipart") from None
    upload = AudioUpload()
    found = False
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if name != "file":
                    raise BadRequest(f"unexpected file field {name!r} (the audio goes in 'file')",
                                     code="unexpected_file")
                upload.audio, found = await value.read(), True
                continue
            key = name.removesuffix("[]")
            if key in LIST_FIELDS:
                upload.fields.setdefault(key, []).append(value)
            else:
                upload.fields[key] = value
    finally:
        await form.close()
    if not found:
        raise BadRequest("the form has no audio file (field 'file')", code="missing_file")
    if not upload.audio:
        raise BadRequest("the audio file is empty", code="invalid_audio")
    return upload
