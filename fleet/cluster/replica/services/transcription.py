"""A replica's transcriptions and translations: decodes uploads, cuts them into chunks,
batches the chunks of every request it holds.

Each upload is decoded (PyAV, 16 kHz mono) and cut by the engine (`prepare`: VAD, features)
off the engine thread. Its chunks, each up to 30 s of speech, are the items of the replica's
DynamicBatcher: a lone request runs at once, and the chunks of requests that arrive while the
model is busy run together in one batched engine call when it comes free; a long file runs as
several calls with other requests' chunks let in between. Within a batch, chunks that share
their settings (task, language, prompt, temperature, timestamps) go through the model as one
call. A streamed request hands its chunks over a batch at a time and sends each batch's text
as it comes.

The API checked the form's shape (fleet.api.protocol.audio); what depends on the model is
checked here, before anything queues: the language, translation and word timestamps on a
model that cannot give them, and the audio itself (empty, not audio, too long)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from fleet.admission import DEFAULT_LIMITS, RequestLimits
from fleet.catalogue.schemas import BaseFamily
from fleet.cluster.replica.batcher import DynamicBatcher, run_grouped
from fleet.engines.audio_codec import decode_audio
from fleet.engines.base import (
    AudioChunk,
    PreparedAudio,
    TranscriptionEngine,
    TranscriptionSettings,
    TranscriptSegment,
)
from fleet.engines.launch_options import FasterWhisperOptions, LaunchOptions, TransformersWhisperOptions
from fleet.errors import BadRequest

DEFAULT_MAX_BATCH_SIZE = 8
# How long a batch may wait for the clients of the previous one (see DynamicBatcher): a
# batch of chunks takes a second or more, a client's next upload arrives in milliseconds.
GATHER_MAX_S = 0.1


@dataclass
class _Item:
    settings: TranscriptionSettings
    chunk: AudioChunk


class TranscriptionService:
    METHODS = frozenset({"transcribe"})
    STREAMS = frozenset({"transcribe_stream"})

    def __init__(self, engine: TranscriptionEngine, family: BaseFamily, model_uid: str,
                 options: LaunchOptions, executor: ThreadPoolExecutor,
                 limits: RequestLimits = DEFAULT_LIMITS):
        self._engine = engine
        self._executor = executor
        self._model_uid = model_uid
        batch = (options.max_batch_size
                 if isinstance(options, FasterWhisperOptions | TransformersWhisperOptions) else None)
        self._max_batch = batch or DEFAULT_MAX_BATCH_SIZE
        self._batcher: DynamicBatcher[_Item, list[TranscriptSegment]] = DynamicBatcher(
            self._run_batch, executor, max_batch_items=self._max_batch,
            max_batch_tokens=self._max_batch, max_open_requests=limits.max_requests,
            gather_max_s=GATHER_MAX_S)

    # ---- ReplicaService -----------------------------------------------------------------------
    @property
    def in_progress(self) -> int:
        return self._batcher.in_progress

    def stats(self) -> dict[str, int]:
        return self._batcher.stats()

    def close(self) -> None:
        pass

    # ---- requests ------------------------------------------------------------------------------
    async def transcribe(self, audio: bytes, options: dict[str, Any]) -> dict[str, Any]:
        """The transcript of `audio` (a file's bytes): text, language, duration, segments with
        times on the file's clock (words too when asked). `options`: task ("transcribe" or
        "translate"), language, prompt, temperature, word_timestamps, segment_timestamps."""
        prepared, settings = await self._prepare(audio, options)
        items = [_Item(settings, chunk) for chunk in prepared.chunks]
        per_chunk = await self._batcher.submit(items, len(items)) if items else []
        return await self._result(prepared, settings, per_chunk)

    async def transcribe_stream(self, audio: bytes,
                                options: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """`{"type": "started"}` once the request is accepted (the API answers 200 only
        then), `{"type": "delta", "text"}` per batch of chunks as it is decoded, and
        `{"type": "done", "transcript"}` with the whole transcript."""
        prepared, settings = await self._prepare(audio, options)
        yield {"type": "started"}
        items = [_Item(settings, chunk) for chunk in prepared.chunks]
        per_chunk: list[list[TranscriptSegment]] = []
        for start in range(0, len(items), self._max_batch):
            batch = items[start:start + self._max_batch]
            part = await self._batcher.submit(batch, len(batch))
            per_chunk.extend(part)
            text = "".join(segment.text for segments in part for segment in segments)
            if text:
                yield {"type": "delta", "text": text}
        yield {"type": "done", "transcript": await self._result(prepared, settings, per_chunk)}

    # ---- checks and preparation ----------------------------------------------------------------
    async def _prepare(self, audio: bytes,
                       options: dict[str, Any]) -> tuple[PreparedAudio, TranscriptionSettings]:
        settings = self._settings(options)
        loop = asyncio.get_running_loop()
        engine = self._engine
        # Decoding and VAD take a while for a long file: off the event loop and off the engine
        # thread, so that other requests keep the model busy meanwhile.
        prepared = await loop.run_in_executor(None, _decode_and_cut, engine, audio)
        if settings.language is None and engine.multilingual and prepared.chunks:
            language = await loop.run_in_executor(self._executor, engine.detect_language,
                                                  prepared)
            settings = TranscriptionSettings(**{**asdict(settings), "language": language})
        return prepared, settings

    def _settings(self, asked: dict[str, Any]) -> TranscriptionSettings:
        engine = self._engine
        task = asked.get("task") or "transcribe"
        language = (asked.get("language") or "").strip().lower() or None
        if task == "translate" and not engine.multilingual:
            raise BadRequest(f"model {self._model_uid} is English-only and does not translate; "
                             "use a multilingual model", code="unsupported_task")
        if language is not None and language not in engine.languages:
            if not engine.multilingual:
                raise BadRequest(f"model {self._model_uid} is English-only; language "
                                 f"{language!r} is not supported", code="unsupported_language")
            raise BadRequest(f"language {language!r} is not one model {self._model_uid} knows "
                             "(ISO-639-1 codes such as en, de, fr)", code="unsupported_language")
        words = bool(asked.get("word_timestamps"))
        if words and not engine.gives_word_timestamps:
            raise BadRequest(f"model {self._model_uid} does not give word timestamps",
                             code="unsupported_timestamp_granularity")
        return TranscriptionSettings(
            task=task, language=language if engine.multilingual else "en",
            prompt=asked.get("prompt") or None,
            temperature=float(asked.get("temperature") or 0.0), word_timestamps=words,
            segment_timestamps=bool(asked.get("segment_timestamps")) or words)

    async def _result(self, prepared: PreparedAudio, settings: TranscriptionSettings,
                      per_chunk: list[list[TranscriptSegment]]) -> dict[str, Any]:
        segments = [segment for chunk in per_chunk for segment in chunk]
        segments = await asyncio.get_running_loop().run_in_executor(
            None, self._engine.finish, prepared, segments)
        for index, segment in enumerate(segments):
            segment.id = index
        return {
            "text": "".join(segment.text for segment in segments).strip(),
            "language": settings.language or "en",
            "task": settings.task,
            "duration": round(prepared.duration, 3),
            "segments": [asdict(segment) for segment in segments],
        }

    # ---- the engine thread ---------------------------------------------------------------------
    def _run_batch(self, items: list[_Item]) -> list[list[TranscriptSegment]]:
        return run_grouped(items, lambda item: item.settings, self._decode_group)

    def _decode_group(self, settings: TranscriptionSettings,
                      group: list[_Item]) -> list[list[TranscriptSegment]]:
        try:
            return self._engine.decode(settings, [item.chunk for item in group])
        except ValueError as exc:
            # The model's own refusal of the settings (a prompt longer than its window).
            raise BadRequest(f"the model refused the request: {exc}",
                             code="invalid_transcription_argument") from None


def _decode_and_cut(engine: TranscriptionEngine, audio: bytes) -> PreparedAudio:
    return engine.prepare(decode_audio(audio, engine.sample_rate))
