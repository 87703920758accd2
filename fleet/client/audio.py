"""The handle of an audio model (`Client.get_model(uid)` of a model of type audio): the same
methods and arguments as Xinference's RESTfulAudioModelHandle (`transcriptions`,
`translations`, `speech`), so code written for one runs on the other. Audio is given as bytes
or as a path to a file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fleet.client.handle import ModelHandle, _raise_for_error

AudioInput = str | bytes | Path


def _audio_bytes(audio: AudioInput) -> bytes:
    return audio if isinstance(audio, bytes) else Path(audio).read_bytes()


class AudioModelHandle(ModelHandle):
    def _transcribe(self, path: str, audio: AudioInput, language: str | None,
                    prompt: str | None, response_format: str, temperature: float,
                    timestamp_granularities: list[str] | None) -> Any:
        form: dict[str, Any] = {"model": self.model_uid, "response_format": response_format,
                                "temperature": str(temperature)}
        if language:
            form["language"] = language
        if prompt:
            form["prompt"] = prompt
        if timestamp_granularities:
            form["timestamp_granularities[]"] = list(timestamp_granularities)
        response = self._client._http.post(
            path, data=form, files=[("file", ("audio", _audio_bytes(audio)))])
        _raise_for_error(response)
        if response_format in ("json", "verbose_json"):
            return response.json()
        return response.text

    def transcriptions(self, audio: AudioInput, language: str | None = None,
                       prompt: str | None = None, response_format: str = "json",
                       temperature: float = 0, timestamp_granularities: list[str] | None = None,
                       **kwargs: Any) -> Any:
        """The transcript: a dict for json / verbose_json, the text itself for text, srt,
        vtt. (kwargs: accepted as Xinference's client does; none is read.)"""
        return self._transcribe("/v1/audio/transcriptions", audio, language, prompt,
                                response_format, temperature, timestamp_granularities)

    def translations(self, audio: AudioInput, language: str | None = None,
                     prompt: str | None = None, response_format: str = "json",
                     temperature: float = 0,
                     timestamp_granularities: list[str] | None = None) -> Any:
        """Speech in any language as English text (multilingual models)."""
        return self._transcribe("/v1/audio/translations", audio, language, prompt,
                                response_format, temperature, timestamp_granularities)

    def speech(self, input: str, voice: str = "", response_format: str = "mp3",
               speed: float = 1.0, stream: bool = False,
               **kwargs: Any) -> bytes | Iterator[bytes]:
        """The spoken text as a file's bytes; with `stream=True` an iterator of the bytes as
        they are made (the first sentence plays while the rest is made)."""
        body = {"model": self.model_uid, "input": input, "voice": voice,
                "response_format": response_format, "speed": speed, "kwargs": json.dumps(kwargs)}
        if not stream:
            response = self._client._http.post("/v1/audio/speech", json=body)
            _raise_for_error(response)
            return response.content
        return self._stream_speech(body)

    def _stream_speech(self, body: dict[str, Any]) -> Iterator[bytes]:
        with self._client._http.stream("POST", "/v1/audio/speech", json=body) as response:
            if not response.is_success:
                response.read()
                _raise_for_error(response)
            yield from response.iter_bytes()
