"""Piper voices (piper-tts: VITS exported to ONNX, espeak-ng phonemes): fast on a CPU.

A voice is an `.onnx` file and its `.onnx.json` config, alone or in a folder (a download of
one voice from rhasspy/piper-voices keeps the repository's language/name/quality folders).
Piper phonemizes the whole text, then synthesizes sentence by sentence: each sentence is one
piece of the stream, so the first can be sent while the rest are made."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fleet.catalogue.schemas import AudioFamily
from fleet.engines.base import SpeechEngine, checked_options
from fleet.engines.launch_options import PiperOptions


def voice_file(path: Path) -> Path:
    """The voice's .onnx file: the path itself, or the one .onnx file under the folder."""
    if path.is_file():
        return path
    found = sorted(path.rglob("*.onnx"))
    if len(found) != 1:
        names = ", ".join(str(f.relative_to(path)) for f in found) or "none"
        raise ValueError(f"{path} must hold one Piper voice (.onnx and .onnx.json), "
                         f"found: {names}")
    return found[0]


class PiperSpeech:
    def __init__(self, model_path: str, family: AudioFamily, device: str | None,
                 options: PiperOptions | None = None):
        options = checked_options(options, PiperOptions)
        self._path = Path(model_path)
        self._family = family
        self._cuda = bool(device and device.startswith("cuda"))
        self._voice: Any = None
        self._speakers: dict[str, int] = {}
        self._length_scale = 1.0
        # None: the voice's own settings (its .onnx.json).
        self._noise_scale = options.noise_scale
        self._noise_w_scale = options.noise_w_scale
        self._volume = options.volume or 1.0
        self.sample_rate = 22050

    def load(self) -> None:
        from piper import PiperVoice

        onnx = voice_file(self._path)
        config = onnx.with_name(onnx.name + ".json")
        if not config.is_file():
            raise ValueError(f"the voice {onnx.name} has no config {config.name} beside it")
        self._voice = PiperVoice.load(onnx, config_path=config, use_cuda=self._cuda)
        settings = self._voice.config
        self.sample_rate = int(settings.sample_rate)
        self._length_scale = float(settings.length_scale or 1.0)
        self._speakers = dict(settings.speaker_id_map or {})
        if not self._speakers:
            # A one-speaker voice is named by its dataset ("joe"), else by its file's name.
            dataset = json.loads(config.read_text(encoding="utf-8")).get("dataset")
            self._speakers = {str(dataset or onnx.name.removesuffix(".onnx")): -1}

    def voices(self) -> list[str]:
        return list(self._speakers)

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[np.ndarray]:
        from piper import SynthesisConfig

        speaker = self._speakers[voice]
        config = SynthesisConfig(speaker_id=speaker if speaker >= 0 else None,
                                 length_scale=self._length_scale / speed,
                                 noise_scale=self._noise_scale, noise_w_scale=self._noise_w_scale,
                                 volume=self._volume)
        for chunk in self._voice.synthesize(text, syn_config=config):
            yield chunk.audio_float_array


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[SpeechEngine] = PiperSpeech
