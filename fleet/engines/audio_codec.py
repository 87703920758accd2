"""Audio in and out through PyAV (FFmpeg): uploads decoded to the mono float32 samples that
speech recognisers read, and synthesized samples encoded, chunk by chunk, in the formats of
OpenAI's speech endpoint. No container is written by hand: FFmpeg's muxers write WAV, Ogg
(Opus), ADTS (AAC), MP3 and FLAC, also to a sink that cannot seek (a stream)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
from av.audio.stream import AudioStream

from fleet.errors import BadRequest
from fleet.limits import exceeded, limits


@dataclass(frozen=True)
class SpeechFormat:
    container: str  # FFmpeg's muxer
    codec: str  # FFmpeg's encoder
    media_type: str
    # Some encoders take only some rates (Opus: 48 kHz); None: the voice's own rate.
    rate: int | None = None


# OpenAI's `response_format` values of /v1/audio/speech. `pcm` is raw signed 16-bit
# little-endian samples at the voice's rate (OpenAI's is 24 kHz; ours says its rate in the
# X-Sample-Rate header, since a voice's rate is its own).
SPEECH_FORMATS: dict[str, SpeechFormat] = {
    "mp3": SpeechFormat("mp3", "libmp3lame", "audio/mpeg"),
    "opus": SpeechFormat("ogg", "libopus", "audio/ogg", rate=48000),
    "aac": SpeechFormat("adts", "aac", "audio/aac"),
    "flac": SpeechFormat("flac", "flac", "audio/flac"),
    "wav": SpeechFormat("wav", "pcm_s16le", "audio/wav"),
    "pcm": SpeechFormat("s16le", "pcm_s16le", "audio/pcm"),
}


class _Sink:
    """A write-only file for FFmpeg's muxer: what it wrote since the last `take`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


class SpeechEncoder:
    """Encodes float32 samples in [-1, 1] as they come: `add` returns the bytes the muxer has
    written so far (possibly none: MP3 and Ogg hold a frame or a page back), `finish` the rest."""

    def __init__(self, response_format: str, sample_rate: int):
        spec = SPEECH_FORMATS[response_format]
        self._sink = _Sink()
        self._container = av.open(self._sink, mode="w", format=spec.container)
        stream = self._container.add_stream(spec.codec, rate=spec.rate or sample_rate,
                                            layout="mono")
        if not isinstance(stream, AudioStream):  # every codec of SPEECH_FORMATS is audio
            raise TypeError(f"{spec.codec} is not an audio codec")
        self._stream = stream
        self._rate = sample_rate
        self._pts = 0

    def add(self, samples: np.ndarray) -> bytes:
        if samples.size:
            pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)[None, :]
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = self._rate
            frame.pts = self._pts
            self._pts += pcm.shape[1]
            # The codec context resamples to the encoder's rate and sample format itself.
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()

    def finish(self) -> bytes:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return self._sink.take()


def encode_speech(chunks: list[np.ndarray], response_format: str, sample_rate: int) -> bytes:
    encoder = SpeechEncoder(response_format, sample_rate)
    return b"".join([*(encoder.add(c) for c in chunks), encoder.finish()])


def decode_audio(data: bytes, sample_rate: int) -> np.ndarray:
    """The file's first audio stream as mono float32 at `sample_rate`. A file that FFmpeg
    cannot read as audio is a 400; so is one longer than the limit `max_audio_seconds`, found
    while decoding (never more than the cap is held in memory, however the header lies)."""
    if not data:
        raise BadRequest("the audio file is empty", code="invalid_audio")
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except (av.FFmpegError, ValueError) as exc:
        raise BadRequest(f"the file could not be read as audio: {exc}",
                         code="invalid_audio") from None
    with container:
        if not container.streams.audio:
            raise BadRequest("the file holds no audio stream", code="invalid_audio")
        return _decode_stream(container, sample_rate, limits().max_audio_seconds)


def _decode_stream(container: av.container.InputContainer, sample_rate: int,
                   max_seconds: int) -> np.ndarray:
    stream = container.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    limit = int(max_seconds * sample_rate)
    parts: list[np.ndarray] = []
    held = 0
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1))
                held += parts[-1].size
            if held > limit:
                raise exceeded("max_audio_seconds",
                               f"the audio lasts more than {max_seconds} seconds",
                               "audio_too_long")
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().reshape(-1))
    except av.FFmpegError as exc:
        raise BadRequest(f"the audio could not be decoded: {exc}", code="invalid_audio") from None
    if not parts or sum(p.size for p in parts) == 0:
        raise BadRequest("the file holds no audio samples", code="invalid_audio")
    return np.concatenate(parts).astype(np.float32, copy=False)
