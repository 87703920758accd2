"""Kokoro-82M (the `kokoro` package: StyleTTS 2 with an ISTFTNet vocoder, 24 kHz, Apache-2.0),
loaded from a local folder so that nothing is fetched at run time: `config.json`, the
`.pth` weights and `voices/*.pt` (the layout of hexgrad/Kokoro-82M).

Voices are the folder's `voices/*.pt` files (`af_heart`, `am_adam`, ...): the first letter is
the language (a: American English, b: British English, e, f, h, i, j, p, z), the second the
speaker's sex. One G2P pipeline per language is made when a voice of it is first asked.
Kokoro cuts text at line breaks and at 510 phonemes, and yields one piece per cut: each is a
piece of the stream.

Untested in Fleet's test suite: no Kokoro weights can be downloaded on the machines it was
written on, and its English G2P (misaki) loads a spaCy model from the network on first use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fleet.catalogue.schemas import AudioFamily
from fleet.engines.base import SpeechEngine, checked_options
from fleet.engines.launch_options import KokoroOptions
from fleet.engines.transformers_llm import pick_device

SAMPLE_RATE = 24000
REPO_ID = "hexgrad/Kokoro-82M"  # named to KModel/KPipeline only to keep them from warning


class KokoroSpeech:
    sample_rate = SAMPLE_RATE

    def __init__(self, model_path: str, family: AudioFamily, device: str | None,
                 options: KokoroOptions | None = None):
        options = checked_options(options, KokoroOptions)
        self._path = Path(model_path)
        self._family = family
        self._device = pick_device(device)
        self._lang_code = options.lang_code
        self._model: Any = None
        self._pipelines: dict[str, Any] = {}
        self._voices: dict[str, Path] = {}

    def load(self) -> None:
        from kokoro import KModel

        weights = sorted(self._path.glob("*.pth"))
        config = self._path / "config.json"
        if not weights or not config.is_file():
            raise ValueError(f"{self._path} must hold Kokoro's config.json and a .pth file")
        self._voices = {p.stem: p for p in sorted((self._path / "voices").glob("*.pt"))}
        if not self._voices:
            raise ValueError(f"{self._path}/voices holds no voice (.pt files)")
        self._model = KModel(repo_id=REPO_ID, config=str(config),
                             model=str(weights[0])).to(self._device).eval()

    def voices(self) -> list[str]:
        # The model card's favourite first: it is the default voice.
        return sorted(self._voices, key=lambda name: (name != "af_heart", name))

    def _pipeline(self, voice: str) -> Any:
        from kokoro import KPipeline

        lang = self._lang_code or voice[0]
        if lang not in self._pipelines:
            self._pipelines[lang] = KPipeline(lang_code=lang, repo_id=REPO_ID, model=False)
        return self._pipelines[lang]

    def synthesize(self, text: str, voice: str, speed: float) -> Iterator[np.ndarray]:
        import torch

        pipeline = self._pipeline(voice)
        pack = torch.load(self._voices[voice], weights_only=True).to(self._model.device)
        for result in pipeline(text, voice=str(self._voices[voice]), speed=speed):
            if not result.phonemes:
                continue
            with torch.inference_mode():
                output = self._model(result.phonemes, pack[len(result.phonemes) - 1], speed,
                                     return_output=True)
            yield output.audio.float().cpu().numpy().reshape(-1)


# mypy checks here that the class is everything the protocol asks for.
_PROTOCOL: type[SpeechEngine] = KokoroSpeech
