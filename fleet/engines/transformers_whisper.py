"""Whisper checkpoints in Transformers' format (openai/whisper-*, distil-whisper/*), for
folders that faster-whisper cannot read (no CTranslate2 conversion) and for GPUs without it.

Audio is cut into plain 30 s windows (Whisper's own window; no VAD model needed), and the
windows of several requests are decoded together in one `generate` call. Segment times come
from Whisper's timestamp tokens when asked; word timestamps are not given (faster-whisper
gives them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fleet.catalogue.schemas import AudioFamily
from fleet.engines.base import (
    AudioChunk,
    PreparedAudio,
    TranscriptionEngine,
    TranscriptionSettings,
    TranscriptSegment,
    checked_options,
)
from fleet.engines.launch_options import TransformersWhisperOptions
from fleet.engines.transformers_llm import pick_device

SAMPLE_RATE = 16000
WINDOW_S = 30


class TransformersWhisper:
    sample_rate = SAMPLE_RATE
    gives_word_timestamps = False

    def __init__(self, model_path: str, family: AudioFamily, device: str | None,
                 options: TransformersWhisperOptions | None = None):
        options = checked_options(options, TransformersWhisperOptions)
        self._path = Path(model_path)
        self._family = family
        self._device = pick_device(device)
        requested = options.dtype or options.torch_dtype
        if requested and requested != "auto":
            self._dtype = getattr(torch, requested)
        else:
            self._dtype = torch.float16 if self._device.startswith("cuda") else torch.float32
        self._processor: Any = None
        self._model: Any = None
        self.multilingual = bool(getattr(family, "multilingual", True))
        self.languages: frozenset[str] = frozenset({"en"})

    def load(self) -> None:
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        self._processor = WhisperProcessor.from_pretrained(str(self._path))
        # The ignore: PreTrainedModel.to's functools.wraps (see TransformersLLM.load).
        self._model = WhisperForConditionalGeneration.from_pretrained(
            str(self._path), dtype=self._dtype).to(self._device).eval()  # type: ignore[arg-type]
        generation = self._model.generation_config
        self.multilingual = bool(getattr(generation, "is_multilingual", False))
        codes = getattr(generation, "lang_to_id", None) or {}
        if self.multilingual and codes:
            self.languages = frozenset(code.strip("<|>") for code in codes)

    def prepare(self, audio: np.ndarray) -> PreparedAudio:
        step = WINDOW_S * SAMPLE_RATE
        pieces = [audio[start:start + step] for start in range(0, audio.shape[0], step)]
        extractor = self._processor.feature_extractor
        chunks = [AudioChunk(extractor(piece, sampling_rate=SAMPLE_RATE,
                                       return_tensors="np").input_features[0],
                             index * WINDOW_S, piece.shape[0] / SAMPLE_RATE)
                  for index, piece in enumerate(pieces)]
        return PreparedAudio(chunks, audio.shape[0] / SAMPLE_RATE)

    def finish(self, prepared: PreparedAudio,
               segments: list[TranscriptSegment]) -> list[TranscriptSegment]:
        return segments  # the windows are cut from the upload as it is: times are already its

    def _features(self, chunks: list[AudioChunk]) -> torch.Tensor:
        return torch.from_numpy(np.stack([c.features for c in chunks])).to(
            self._device, self._dtype)

    @torch.inference_mode()
    def detect_language(self, prepared: PreparedAudio) -> str:
        if not self.multilingual or not prepared.chunks:
            return "en"
        ids = self._model.detect_language(self._features(prepared.chunks[:1]))
        return self._processor.tokenizer.decode(ids[0]).strip("<|>")

    @torch.inference_mode()
    def decode(self, settings: TranscriptionSettings,
               chunks: list[AudioChunk]) -> list[list[TranscriptSegment]]:
        tokenizer = self._processor.tokenizer
        arguments: dict[str, Any] = {"return_timestamps": settings.segment_timestamps}
        if self.multilingual:
            arguments.update(task=settings.task, language=settings.language)
        if settings.temperature > 0:
            arguments.update(do_sample=True, temperature=settings.temperature)
        if settings.prompt:
            arguments["prompt_ids"] = torch.tensor(tokenizer.get_prompt_ids(settings.prompt),
                                                   device=self._device)
        sequences = self._model.generate(self._features(chunks), **arguments)
        if not settings.segment_timestamps:
            texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
            return [[TranscriptSegment(0, round(c.offset, 3), round(c.offset + c.duration, 3),
                                       text, temperature=settings.temperature)]
                    for c, text in zip(chunks, texts, strict=True)]
        # One sequence at a time: Transformers 5's batch_decode refuses output_offsets for more
        # than one ("Can only process a single input at a time").
        return [self._timed(chunk, tokenizer.decode(sequence.tolist(), skip_special_tokens=True,
                                                    output_offsets=True), settings)
                for chunk, sequence in zip(chunks, sequences, strict=True)]

    @staticmethod
    def _timed(chunk: AudioChunk, output: dict[str, Any],
               settings: TranscriptionSettings) -> list[TranscriptSegment]:
        offsets = output.get("offsets") or []
        if not offsets:  # no timestamp tokens came: the window is one segment
            return [TranscriptSegment(0, round(chunk.offset, 3),
                                      round(chunk.offset + chunk.duration, 3), output["text"],
                                      temperature=settings.temperature)]
        segments = []
        for part in offsets:
            start, end = part["timestamp"]
            # The window is padded to 30 s: what the model places past the chunk's end is
            # its guess at the padding's silence (or a second pass of `generate` over the
            # window's rest, which the tokenizer counts on from 30 s).
            if start >= chunk.duration:
                continue
            end = chunk.duration if end is None else min(max(end, start), chunk.duration)
            segments.append(TranscriptSegment(
                0, round(chunk.offset + start, 3), round(chunk.offset + end, 3),
                part["text"], temperature=settings.temperature))
        return segments


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[TranscriptionEngine] = TransformersWhisper
