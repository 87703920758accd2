"""A replica's transcript (fleet.cluster.replica.services.transcription) in the response formats of
OpenAI's transcription endpoints: json, text, srt, vtt and verbose_json."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json",
                "text": "text/plain; charset=utf-8", "srt": "application/x-subrip",
                "vtt": "text/vtt; charset=utf-8"}


def _clock(seconds: float, separator: str) -> str:
    """`HH:MM:SS,mmm` (SubRip) or `HH:MM:SS.mmm` (WebVTT)."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def srt(segments: list[dict[str, Any]]) -> str:
    blocks = [f"{n}\n{_clock(s['start'], ',')} --> {_clock(s['end'], ',')}\n{s['text'].strip()}\n"
              for n, s in enumerate(segments, start=1)]
    return "\n".join(blocks)


def vtt(segments: list[dict[str, Any]]) -> str:
    blocks = [f"{_clock(s['start'], '.')} --> {_clock(s['end'], '.')}\n{s['text'].strip()}\n"
              for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def verbose_json(transcript: dict[str, Any], granularities: list[str]) -> dict[str, Any]:
    """OpenAI's verbose_json: segments unless only words were asked, words when asked."""
    body: dict[str, Any] = {"task": transcript["task"], "language": transcript["language"],
                            "duration": transcript["duration"], "text": transcript["text"]}
    segments = transcript["segments"]
    if "word" in granularities:
        body["words"] = [{"word": w["word"].strip(), "start": w["start"], "end": w["end"]}
                         for s in segments for w in s.get("words") or []]
    if "segment" in granularities or "word" not in granularities:
        body["segments"] = [{k: v for k, v in s.items() if k != "words"} for s in segments]
    return body


def transcript_body(transcript: dict[str, Any], response_format: str,
                    granularities: list[str]) -> bytes:
    if response_format == "text":
        return (transcript["text"] + "\n").encode()
    if response_format == "srt":
        return srt(transcript["segments"]).encode()
    if response_format == "vtt":
        return vtt(transcript["segments"]).encode()
    if response_format == "verbose_json":
        return orjson.dumps(verbose_json(transcript, granularities))
    return orjson.dumps({"text": transcript["text"]})


def transcript_response(transcript: dict[str, Any], response_format: str,
                        granularities: list[str]) -> Response:
    return Response(transcript_body(transcript, response_format, granularities),
                    media_type=_MEDIA_TYPES[response_format])
