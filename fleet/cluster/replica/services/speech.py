"""A replica's speech: checks the voice and the text, synthesizes piece by piece on the engine
thread, encodes each piece as it comes.

Voices: the model's own names, and OpenAI's (alloy, echo, ...), so that a client written for
OpenAI works unchanged. An OpenAI name goes to the model's voice of that name when it has one
(Kokoro's `af_alloy` for `alloy`), else to one of the model's voices, the same one each time
(a one-voice model speaks every OpenAI voice with its one voice). Any other name is a 400 that
lists the voices.

Requests are not batched: a voice makes a sentence in a fraction of its duration, and the
pieces of concurrent requests take turns on the engine thread, a sentence at a time, so that
each stream keeps flowing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from fleet.admission import DEFAULT_LIMITS, Admission, RequestLimits
from fleet.catalogue.schemas import BaseFamily
from fleet.engines.audio_codec import SPEECH_FORMATS, SpeechEncoder
from fleet.engines.base import SpeechEngine
from fleet.engines.launch_options import LaunchOptions
from fleet.errors import BadRequest
from fleet.limits import exceeded, limits

# OpenAI's voices, in the order of its documentation.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage",
                 "shimmer", "verse", "marin", "cedar")
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # OpenAI's range


def pick_voice(asked: str, voices: list[str], model_uid: str) -> str:
    """The model's voice for `asked` (see the top); BadRequest for an unknown name."""
    wanted = asked.strip().lower()
    if not wanted:
        return voices[0]
    by_name = {voice.lower(): voice for voice in voices}
    if wanted in by_name:
        return by_name[wanted]
    if wanted in OPENAI_VOICES:
        for voice in voices:
            if voice.lower().rsplit("_", 1)[-1] == wanted:
                return voice
        return voices[OPENAI_VOICES.index(wanted) % len(voices)]
    shown = ", ".join(voices[:20]) + (f" and {len(voices) - 20} more" if len(voices) > 20 else "")
    raise BadRequest(f"unknown voice {asked!r} for model {model_uid}; its voices: {shown} "
                     f"(OpenAI's names work too: {', '.join(OPENAI_VOICES)})",
                     code="unknown_voice")


class SpeechService:
    METHODS = frozenset({"speech", "voices"})
    STREAMS = frozenset({"speech_stream"})

    def __init__(self, engine: SpeechEngine, family: BaseFamily, model_uid: str,
                 options: LaunchOptions, executor: ThreadPoolExecutor,
                 limits: RequestLimits = DEFAULT_LIMITS):
        self._engine = engine
        self._executor = executor
        self._model_uid = model_uid
        self._admission = Admission(limits.max_requests)

    # ---- ReplicaService -----------------------------------------------------------------------
    @property
    def in_progress(self) -> int:
        return self._admission.in_progress

    def stats(self) -> dict[str, int]:
        return {"last_size": 0, "max_size": 0, "batches": 0, "queued": self.in_progress}

    def close(self) -> None:
        pass

    # ---- requests ------------------------------------------------------------------------------
    async def voices(self) -> list[str]:
        return self._engine.voices()

    async def speech(self, text: str, voice: str, response_format: str, speed: float) -> bytes:
        """The whole file."""
        parts = []
        async for part in self.speech_stream(text, voice, response_format, speed):
            if isinstance(part, bytes):
                parts.append(part)
        return b"".join(parts)

    async def speech_stream(self, text: str, voice: str, response_format: str,
                            speed: float) -> AsyncIterator[Any]:
        """First `{"media_type", "sample_rate", "voice"}` once the request is accepted (the
        API answers 200 only then), then the file's bytes as they are made, and last
        `{"seconds"}`: how long the speech lasts, which the usage records count."""
        chosen = self._check(text, voice, response_format, speed)
        samples = [0]
        with self._admission:
            yield {"media_type": SPEECH_FORMATS[response_format].media_type,
                   "sample_rate": self._engine.sample_rate, "voice": chosen}
            async for data in self._pieces(text, chosen, response_format, speed, samples):
                yield data
            yield {"seconds": samples[0] / self._engine.sample_rate}

    async def _pieces(self, text: str, voice: str, response_format: str, speed: float,
                      samples: list[int]) -> AsyncIterator[bytes]:
        """The encoded pieces; `samples[0]` counts the samples they hold."""
        loop = asyncio.get_running_loop()
        engine = self._engine
        encoder = SpeechEncoder(response_format, engine.sample_rate)
        pieces: Iterator[np.ndarray] = iter(engine.synthesize(text, voice, speed))
        while True:
            # One sentence made and encoded per turn on the engine thread: concurrent requests
            # take turns sentence by sentence.
            made = await loop.run_in_executor(self._executor, _next_encoded, pieces, encoder)
            if made is None:
                break
            data, count = made
            samples[0] += count
            if data:
                yield data
        tail = encoder.finish()
        if tail:
            yield tail

    def _check(self, text: str, voice: str, response_format: str, speed: float) -> str:
        if not text.strip():
            raise BadRequest("input is empty: there is nothing to speak", code="empty_input")
        if len(text) > limits().max_speech_chars:
            raise exceeded("max_speech_chars", f"input has {len(text)} characters",
                           "input_too_long")
        if response_format not in SPEECH_FORMATS:
            raise BadRequest(f"unknown response_format {response_format!r}; one of "
                             f"{', '.join(SPEECH_FORMATS)}", code="unsupported_format")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise BadRequest(f"speed must be between {MIN_SPEED} and {MAX_SPEED}",
                             code="invalid_speed")
        return pick_voice(voice, self._engine.voices(), self._model_uid)


def _next_encoded(pieces: Iterator[np.ndarray],
                  encoder: SpeechEncoder) -> tuple[bytes, int] | None:
    """The next piece, encoded (maybe b"" while the encoder holds it back), and its number of
    samples; None at the end."""
    piece = next(pieces, None)
    if piece is None:
        return None
    samples = np.asarray(piece, dtype=np.float32).reshape(-1)
    return encoder.add(samples), samples.size
