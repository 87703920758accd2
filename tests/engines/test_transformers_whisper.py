"""The Transformers Whisper engine (fleet/engines/transformers_whisper.py) and the replica's
TranscriptionService on it, on tiny random-weight Whispers built on the spot
(tests/audio_builders.py: one English-only, one multilingual). The engine is found as a
replica finds it: the files tell the format, the registry the engine and its class. The
weights are random, so nothing here is about the words: the transcripts' shape, times,
languages, batching and refusals are."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fleet.catalogue.registry import parse_family
from fleet.catalogue.schemas import BaseFamily
from fleet.cluster.replica.services.transcription import TranscriptionService
from fleet.cluster.weights.weights_info import infer_model_format
from fleet.engines.audio_codec import decode_audio, encode_speech
from fleet.engines.base import TranscriptionEngine
from fleet.engines.launch_options import TransformersWhisperOptions
from fleet.engines.piper_tts import PiperSpeech
from fleet.engines.registry import pick_engine
from fleet.errors import BadRequest
from tests.audio_builders import (
    TINY_WHISPER_LANGUAGES,
    piper_voice_folder,
    tiny_whisper_folder,
)

TEXT = "The quick brown fox jumps over the lazy dog."


def _family(folder: Path, multilingual: bool) -> BaseFamily:
    return parse_family("audio", {"version": 2, "model_name": "tiny-whisper",
                                  "model_family": "whisper", "model_ability": ["audio2text"],
                                  "multilingual": multilingual, "model_uri": f"file://{folder}"})


def _load(multilingual: bool) -> tuple[TranscriptionEngine, BaseFamily]:
    """As a replica does: the format told by the files, the engine picked by the registry,
    its audio class built with the launch's engine options, typed, and loaded."""
    folder = tiny_whisper_folder(multilingual)
    family = _family(folder, multilingual)
    model_format = infer_model_format(str(folder), family)
    assert model_format == "pytorch"
    choice = pick_engine(family, None, model_format, None, None)
    assert choice.engine.name == "transformers"
    options = choice.engine.typed_options(family.model_type, {"dtype": "float32"})
    engine = choice.engine.load_class(family.model_type)(str(folder), family, "cpu", options)
    engine.load()
    return engine, family


@pytest.fixture(scope="module")
def english() -> tuple[TranscriptionEngine, BaseFamily]:
    return _load(False)


@pytest.fixture(scope="module")
def multilingual() -> tuple[TranscriptionEngine, BaseFamily]:
    return _load(True)


@pytest.fixture(scope="module")
def spoken() -> bytes:
    """A few seconds of real speech: the Piper voice, as a wav file."""
    voice = PiperSpeech(str(piper_voice_folder()), parse_family(
        "audio", {"version": 2, "model_name": "v", "model_family": "piper",
                  "model_ability": ["text2audio"], "multilingual": False,
                  "model_uri": f"file://{piper_voice_folder()}"}), "cpu")
    voice.load()
    return encode_speech(list(voice.synthesize(TEXT, "joe", 1.0)), "wav", voice.sample_rate)


def _transcribe(loaded: tuple[TranscriptionEngine, BaseFamily], data: bytes,
                *requests: dict[str, Any],
                hold: bool = False) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Each of `requests` (options) sent at once to one TranscriptionService; the results in
    order, and the service's batch stats. hold: the engine thread is kept busy until all the
    requests are in (the first one's batch waiting for it, the others queued behind), as
    when they come while the model decodes another's: the tiny model decodes too fast for
    requests to meet otherwise."""
    engine, family = loaded

    async def run() -> tuple[list[dict[str, Any]], dict[str, int]]:
        with ThreadPoolExecutor(max_workers=1) as engine_thread:
            service = TranscriptionService(engine, family, "tiny", TransformersWhisperOptions(),
                                           engine_thread)
            release = threading.Event()
            busy = engine_thread.submit(release.wait, 30) if hold else None
            waiting = asyncio.gather(*(service.transcribe(data, options) for options in requests))
            if busy is not None:
                deadline = time.monotonic() + 20
                while not (service.in_progress == len(requests)
                           and service.stats()["queued"] == len(requests) - 1):
                    assert time.monotonic() < deadline, service.stats()
                    await asyncio.sleep(0.01)
                release.set()
            results = await waiting
            return list(results), service.stats()

    return asyncio.run(run())


def _check_well_formed(result: dict[str, Any], duration: float) -> None:
    assert abs(result["duration"] - duration) < 0.05, result["duration"]
    assert isinstance(result["text"], str)
    assert result["segments"], result
    for index, segment in enumerate(result["segments"]):
        assert segment["id"] == index
        assert isinstance(segment["text"], str)
        assert 0 <= segment["start"] <= segment["end"] <= duration + 0.0005, (segment, duration)
    assert result["text"] == "".join(s["text"] for s in result["segments"]).strip()


def test_engine_prepares_and_decodes_real_speech(english, spoken):
    engine, _ = english
    audio = decode_audio(spoken, engine.sample_rate)
    prepared = engine.prepare(audio)
    assert prepared.duration == pytest.approx(audio.size / 16000)
    assert 2 < prepared.duration < 30 and len(prepared.chunks) == 1
    assert prepared.chunks[0].features.shape == (80, 3000)  # 80 mels, a 30 s window
    assert engine.multilingual is False and engine.languages == {"en"}
    assert engine.gives_word_timestamps is False
    (result,), stats = _transcribe(english, spoken, {})
    _check_well_formed(result, prepared.duration)
    assert result["language"] == "en" and result["task"] == "transcribe"
    assert len(result["segments"]) == 1  # no timestamps asked: the window is one segment
    assert (result["segments"][0]["start"], result["segments"][0]["end"]) == \
        (0.0, round(prepared.duration, 3))
    assert result["text"], "random weights that are set up to say something said nothing"
    assert stats["batches"] == 1


def test_concurrent_requests_share_one_generate_call_and_read_the_same(english, spoken):
    (alone,), _ = _transcribe(english, spoken, {})
    together, stats = _transcribe(english, spoken, {}, {}, {}, hold=True)
    # The first runs alone; the two that came while the model was busy run as one batch, one
    # `generate` over both windows (they share their settings).
    assert stats["max_size"] == 2 and stats["batches"] == 2, stats
    assert [r["text"] for r in together] == [alone["text"]] * 3
    assert [r["segments"] for r in together] == [alone["segments"]] * 3


def test_segment_timestamps_stay_inside_the_audio(english, spoken):
    duration = decode_audio(spoken, 16000).size / 16000
    (timed, plain), _ = _transcribe(english, spoken, {"segment_timestamps": True}, {})
    _check_well_formed(timed, duration)
    # The times are the model's timestamp tokens (the first one within its first second), not
    # the window's bounds; what it placed past the audio's end is dropped, an end past it cut.
    first = timed["segments"][0]
    assert 0 < first["start"] <= 1.0 and first["start"] * 50 == pytest.approx(
        round(first["start"] * 50)), first  # a multiple of Whisper's 20 ms
    assert first["end"] > first["start"]
    starts = [s["start"] for s in timed["segments"]]
    assert starts == sorted(starts)
    assert timed["segments"] != plain["segments"]

def test_word_timestamps_are_refused(english, spoken):
    with pytest.raises(BadRequest) as refused:
        _transcribe(english, spoken, {"word_timestamps": True})
    assert refused.value.status_code == 400
    assert refused.value.code == "unsupported_timestamp_granularity"


def test_english_only_refuses_translation_and_other_languages(english, spoken):
    for options, code in (({"task": "translate"}, "unsupported_task"),
                          ({"language": "de"}, "unsupported_language")):
        with pytest.raises(BadRequest) as refused:
            _transcribe(english, spoken, options)
        assert refused.value.status_code == 400 and refused.value.code == code, options
    (result,), _ = _transcribe(english, spoken, {"language": "en"})
    assert result["language"] == "en"


def test_a_prompt_longer_than_the_decoder_is_refused(english, spoken):
    with pytest.raises(BadRequest) as refused:
        _transcribe(english, spoken, {"prompt": "many words " * 20})
    assert refused.value.code == "invalid_transcription_argument"
    (result,), _ = _transcribe(english, spoken, {"prompt": "Fox."})
    assert isinstance(result["text"], str)


def test_multilingual_detects_one_of_its_languages_and_translates(multilingual, spoken):
    engine, _ = multilingual
    assert engine.multilingual is True
    assert engine.languages == set(TINY_WHISPER_LANGUAGES)
    prepared = engine.prepare(decode_audio(spoken, engine.sample_rate))
    detected = engine.detect_language(prepared)
    assert detected in TINY_WHISPER_LANGUAGES
    duration = prepared.duration
    (found, german, translated), _ = _transcribe(
        multilingual, spoken, {}, {"language": "de"},
        {"task": "translate", "language": "de", "segment_timestamps": True})
    assert found["language"] == detected
    assert german["language"] == "de" and german["task"] == "transcribe"
    assert translated["task"] == "translate"
    for result in (found, german, translated):
        _check_well_formed(result, duration)
    with pytest.raises(BadRequest) as refused:
        _transcribe(multilingual, spoken, {"language": "fr"})  # not one of the tiny's four
    assert refused.value.code == "unsupported_language"

