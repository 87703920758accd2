"""Whisper on faster-whisper (CTranslate2): its batched pipeline, fed by the replica's batcher.

faster-whisper's BatchedInferencePipeline cuts one file into chunks of up to 30 s of speech
(Silero VAD), then decodes the chunks in batches. Here the two halves are split: `prepare`
does the cutting (VAD and log-mel features, no model), and `decode` runs the pipeline's own
batched step (`forward`) on chunks that may come from several requests, so that concurrent
transcriptions share one batch instead of queueing file after file. Decoding options are
faster-whisper's batched defaults (beam 5, no conditioning on the previous chunk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fleet.catalogue.schemas import AudioFamily
from fleet.engines.base import (
    AudioChunk,
    PreparedAudio,
    TranscriptionEngine,
    TranscriptionSettings,
    TranscriptSegment,
    TranscriptWord,
    checked_options,
)
from fleet.engines.launch_options import FasterWhisperOptions

SAMPLE_RATE = 16000
BEAM_SIZE = 5
# faster-whisper's batched defaults for VAD: chunks of at most the model's 30 s window, cut
# at silences of 160 ms or more.
MIN_SILENCE_MS = 160


def _device(device: str | None) -> tuple[str, int]:
    """CTranslate2's (device, index) for Fleet's "cpu" / "cuda" / "cuda:1"."""
    if device and device.startswith("cuda"):
        _, _, index = device.partition(":")
        return "cuda", int(index or 0)
    return "cpu", 0


class FasterWhisperTranscription:
    sample_rate = SAMPLE_RATE

    def __init__(self, model_path: str, family: AudioFamily, device: str | None,
                 options: FasterWhisperOptions | None = None):
        options = checked_options(options, FasterWhisperOptions)
        self._path = Path(model_path)
        self._family = family
        self._device, self._device_index = _device(device)
        self._compute_type = options.compute_type or "default"
        self._cpu_threads = options.cpu_threads or 0
        self._vad = options.vad_filter is not False  # default: on
        self._model: Any = None
        self._pipeline: Any = None
        self.multilingual = bool(getattr(family, "multilingual", True))
        self.gives_word_timestamps = True
        self.languages: frozenset[str] = frozenset({"en"})

    def load(self) -> None:
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        self._model = WhisperModel(str(self._path), device=self._device,
                                   device_index=self._device_index,
                                   compute_type=self._compute_type,
                                   cpu_threads=self._cpu_threads, local_files_only=True)
        self._pipeline = BatchedInferencePipeline(self._model)
        # The weights say, whatever the registration claimed.
        self.multilingual = bool(self._model.model.is_multilingual)
        if self.multilingual:
            self.languages = frozenset(self._model.supported_languages)

    # ---- cutting (no model: any thread) ---------------------------------------------------
    def prepare(self, audio: np.ndarray) -> PreparedAudio:
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

        extractor = self._model.feature_extractor
        window = extractor.chunk_length
        duration = audio.shape[0] / SAMPLE_RATE
        if self._vad:
            clips = get_speech_timestamps(audio, VadOptions(
                max_speech_duration_s=window, min_silence_duration_ms=MIN_SILENCE_MS))
        else:
            step = window * SAMPLE_RATE
            clips = [{"start": s, "end": min(s + step, audio.shape[0])}
                     for s in range(0, audio.shape[0], step)]
        if not clips:  # no speech at all
            return PreparedAudio([], duration, clips)
        pieces, metadata = collect_chunks(audio, clips, max_duration=window)
        chunks = [AudioChunk(pad_or_trim(extractor(piece)[..., :-1]), meta["offset"],
                             meta["duration"])
                  for piece, meta in zip(pieces, metadata, strict=True) if piece.size]
        return PreparedAudio(chunks, duration, clips if self._vad else None)

    def finish(self, prepared: PreparedAudio,
               segments: list[TranscriptSegment]) -> list[TranscriptSegment]:
        """Times on the upload's clock: VAD removed the silences between the chunks."""
        if not prepared.timeline:
            return segments
        from faster_whisper.transcribe import restore_speech_timestamps

        # It reads and sets start, end and words' start and end: ours have the same names.
        restored = list(restore_speech_timestamps(segments, prepared.timeline, SAMPLE_RATE))
        for segment in restored:  # numpy floats, from its time map
            segment.start, segment.end = round(float(segment.start), 3), round(float(segment.end), 3)
            for word in segment.words or []:
                word.start, word.end = round(float(word.start), 3), round(float(word.end), 3)
        return restored

    # ---- the model (the engine thread) -----------------------------------------------------
    def detect_language(self, prepared: PreparedAudio) -> str:
        if not self.multilingual or not prepared.chunks:
            return "en"
        language, _, _ = self._model.detect_language(features=prepared.chunks[0].features)
        return language

    def decode(self, settings: TranscriptionSettings,
               chunks: list[AudioChunk]) -> list[list[TranscriptSegment]]:
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual,
                              task=settings.task, language=settings.language or "en")
        options = _options(settings, tokenizer)
        features = np.stack([chunk.features for chunk in chunks])
        metadata = [{"offset": c.offset, "duration": c.duration} for c in chunks]
        # Word alignment carries the last word's end from one call to the next within a file;
        # a batch mixes files, so each call starts afresh.
        self._pipeline.last_speech_timestamp = 0.0
        outputs = self._pipeline.forward(features, tokenizer, metadata, options)
        return [[_segment(part, settings) for part in output] for output in outputs]


def _options(settings: TranscriptionSettings, tokenizer: Any) -> Any:
    """BatchedInferencePipeline.transcribe's options for these settings."""
    from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

    return TranscriptionOptions(
        beam_size=BEAM_SIZE, best_of=5, patience=1, length_penalty=1, repetition_penalty=1,
        no_repeat_ngram_size=0, log_prob_threshold=-1.0, no_speech_threshold=0.6,
        compression_ratio_threshold=2.4, temperatures=[settings.temperature],
        initial_prompt=settings.prompt or None, prefix=None, suppress_blank=True,
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        prepend_punctuations="\"'“¿([{-", append_punctuations="\"'.。,，!！?？:：”)]}、",
        max_new_tokens=None, hotwords=None, word_timestamps=settings.word_timestamps,
        hallucination_silence_threshold=None, condition_on_previous_text=False,
        clip_timestamps=[], prompt_reset_on_temperature=0.5, multilingual=False,
        without_timestamps=not settings.segment_timestamps, max_initial_timestamp=0.0)


def _segment(part: dict[str, Any], settings: TranscriptionSettings) -> TranscriptSegment:
    words = None
    if settings.word_timestamps:
        words = [TranscriptWord(w["word"], round(w["start"], 3), round(w["end"], 3),
                                float(w["probability"])) for w in part.get("words") or []]
    return TranscriptSegment(
        id=0, start=round(part["start"], 3), end=round(part["end"], 3), text=part["text"],
        tokens=list(part["tokens"]), temperature=settings.temperature,
        avg_logprob=float(part["avg_logprob"]), compression_ratio=float(part["compression_ratio"]),
        no_speech_prob=float(part["no_speech_prob"]), words=words)


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[TranscriptionEngine] = FasterWhisperTranscription
