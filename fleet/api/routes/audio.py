"""Audio routes, as OpenAI serves them: transcriptions and translations (multipart `file`,
answered as json, text, srt, vtt or verbose_json, or streamed as `transcript.text.delta`
events), and speech (JSON body, the audio streamed as it is made so that playback can start
at the first sentence, or as `speech.audio.delta` events).

The routes validate and convert; the replica's services (fleet.cluster.replica.services.transcription,
fleet.cluster.replica.services.speech) decode, check what depends on the model, and run it."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.responses import StreamingResponse

from fleet.api import metering
from fleet.api.auth.middleware import check_model
from fleet.api.errors import stream_error
from fleet.api.openapi import FileField, multipart_body
from fleet.api.protocol.audio import SpeechRequest, TranscriptionForm
from fleet.api.protocol.audio_uploads import read_audio_upload
from fleet.api.protocol.transcript_formats import transcript_response
from fleet.errors import BadRequest
from fleet.limits import exceeded, limits

logger = logging.getLogger(__name__)
router = APIRouter()
_AUDIO_FILE = {"file": FileField("the audio: any format FFmpeg reads (mp3, mp4, m4a, wav, webm, "
                                  "ogg, flac...)", required=True)}
_TRANSCRIPT = {200: {"description": "The transcript in the asked format, or with stream=true "
                                    "server-sent events (transcript.text.delta, "
                                    "transcript.text.done)",
                     "content": {"application/json": {}, "text/plain": {},
                                 "application/x-subrip": {}, "text/vtt": {},
                                 "text/event-stream": {}}}}
_SPEECH = {200: {"description": "The audio, streamed as it is made (or server-sent events "
                                "with stream_format=sse)",
                 "content": {media: {"schema": {"type": "string", "format": "binary"}}
                             for media in ("audio/mpeg", "audio/ogg", "audio/aac", "audio/flac",
                                           "audio/wav", "audio/pcm")}}}


def _sse(event: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def _transcript_events(first_done: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    try:
        async for item in first_done:
            if item["type"] == "delta":
                yield _sse({"type": "transcript.text.delta", "delta": item["text"]})
            elif item["type"] == "done":
                transcript = item["transcript"]
                metering.heard_audio(transcript.get("duration", 0.0))
                yield _sse({"type": "transcript.text.done", "text": transcript["text"],
                            "usage": {"type": "duration",
                                      "seconds": round(transcript["duration"])}})
    except Exception as exc:  # the answer has started: the error travels as an event
        yield _sse({"type": "error", **stream_error(exc)})
    yield b"data: [DONE]\n\n"


async def _transcribe(request: Request, task: str) -> Response:
    upload = await read_audio_upload(request)
    try:
        form = TranscriptionForm.model_validate(upload.fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'form'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise BadRequest(f"invalid form: {problems}", code="invalid_request") from None
    check_model(request.scope, form.model)
    granularities = list(dict.fromkeys(form.timestamp_granularities))
    options = {"task": task, "language": form.language, "prompt": form.prompt,
               "temperature": form.temperature, "word_timestamps": "word" in granularities,
               # Finer segments than one per 30 s chunk where the answer shows them.
               "segment_timestamps": form.response_format in ("srt", "vtt", "verbose_json")}
    router_ = request.app.state.cluster.router
    endpoint = "transcriptions" if task == "transcribe" else "translations"
    if form.stream:
        _, rest = await router_.open_service_stream(form.model, endpoint, "transcribe_stream",
                                                    upload.audio, options)
        return StreamingResponse(_transcript_events(rest), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache"})
    transcript = await router_.call(form.model, endpoint, "call_service", "transcribe",
                                    upload.audio, options)
    metering.heard_audio(transcript.get("duration", 0.0))
    return transcript_response(transcript, form.response_format, granularities)


@router.post("/v1/audio/transcriptions", response_class=Response, responses=_TRANSCRIPT,
             openapi_extra=multipart_body(TranscriptionForm, _AUDIO_FILE))
async def create_transcription(request: Request) -> Response:
    """Speech to text in the audio's language (OpenAI's multipart form)."""
    return await _transcribe(request, "transcribe")


@router.post("/v1/audio/translations", response_class=Response, responses=_TRANSCRIPT,
             openapi_extra=multipart_body(TranscriptionForm, _AUDIO_FILE))
async def create_translation(request: Request) -> Response:
    """Speech in any language to English text (multilingual models)."""
    return await _transcribe(request, "translate")


async def _speech_bytes(rest: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    try:
        async for data in rest:
            if isinstance(data, bytes):
                yield data
            else:  # the end: how long the speech lasts
                metering.heard_audio(data["seconds"])
    except Exception as exc:  # headers are sent: all that can be done is to end the stream
        logger.warning("speech stream ended early: %s", exc)


async def _speech_events(rest: AsyncIterator[Any]) -> AsyncIterator[bytes]:
    try:
        async for data in rest:
            if not isinstance(data, bytes):
                metering.heard_audio(data["seconds"])
                continue
            yield _sse({"type": "speech.audio.delta",
                        "audio": base64.b64encode(data).decode("ascii")})
        yield _sse({"type": "speech.audio.done"})
    except Exception as exc:
        yield _sse({"type": "error", **stream_error(exc)})


@router.post("/v1/audio/speech", response_class=Response, responses=_SPEECH)
async def create_speech(request: Request, body: SpeechRequest) -> Response:
    """Text to speech: the audio streams as each sentence is made."""
    check_model(request.scope, body.model)
    if len(body.input) > limits().max_speech_chars:  # the replica checks too; this saves a trip
        raise exceeded("max_speech_chars", f"input has {len(body.input)} characters",
                       "input_too_long")
    first, rest = await request.app.state.cluster.router.open_service_stream(
        body.model, "speech", "speech_stream", body.input, body.voice, body.response_format,
        body.speed)
    headers = {"x-sample-rate": str(first["sample_rate"]), "x-voice": first["voice"]}
    if body.stream_format == "sse":
        return StreamingResponse(_speech_events(rest), media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})
    return StreamingResponse(_speech_bytes(rest), media_type=first["media_type"],
                             headers=headers)
