"""Audio below the HTTP layer, on the real models (tests/audio_builders.py): the catalogue's
audio families, formats told by the files and the engine each goes to, the codec (every
speech format read back by PyAV, uploads refused for what they are), voice names, the
transcript formats, and the replica's services on the real engines (a batch that holds the
chunks of several requests, the same text as one by one)."""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import av
import numpy as np
import pytest

from fleet.admission import RequestLimits
from fleet.api.protocol.transcript_formats import srt, verbose_json, vtt
from fleet.catalogue.registry import builtin_families, parse_family
from fleet.cluster.replica.services.speech import SpeechService, pick_voice
from fleet.cluster.replica.services.transcription import TranscriptionService
from fleet.cluster.weights.weights_info import infer_model_format
from fleet.engines.audio_codec import SPEECH_FORMATS, decode_audio, encode_speech
from fleet.engines.faster_whisper_stt import FasterWhisperTranscription
from fleet.engines.launch_options import FasterWhisperOptions, PiperOptions
from fleet.engines.piper_tts import PiperSpeech
from fleet.engines.registry import engine_by_name, pick_engine
from fleet.errors import BadRequest, TooManyRequests
from tests.audio_builders import piper_voice_folder, whisper_tiny_en_folder, word_error_rate

TEXT = "The quick brown fox jumps over the lazy dog. Meeting notes are ready for review."


def _family(name: str, family: str, ability: str, folder) -> object:
    return parse_family("audio", {"version": 2, "model_name": name, "model_family": family,
                                  "model_ability": [ability], "multilingual": False,
                                  "model_uri": f"file://{folder}"})


@pytest.fixture(scope="module")
def voice() -> PiperSpeech:
    engine = PiperSpeech(str(piper_voice_folder()), _family("v", "piper", "text2audio",
                                                             piper_voice_folder()), "cpu")
    engine.load()
    return engine


@pytest.fixture(scope="module")
def whisper() -> FasterWhisperTranscription:
    folder = whisper_tiny_en_folder()
    engine = FasterWhisperTranscription(str(folder), _family("w", "whisper", "audio2text",
                                                              folder), "cpu")
    engine.load()
    return engine


@pytest.fixture(scope="module")
def spoken(voice: PiperSpeech) -> bytes:
    return encode_speech(list(voice.synthesize(TEXT, "joe", 1.0)), "wav", voice.sample_rate)


def test_catalogue_has_whisper_in_both_formats_piper_and_kokoro():
    families = builtin_families("audio")
    for name in ("whisper-tiny", "whisper-large-v3", "whisper-large-v3-turbo",
                 "distil-whisper-large-v3"):
        formats = {s.model_format: s.model_id for s in families[name].model_specs}
        assert set(formats) == {"ct2", "pytorch"}, name
        assert pick_engine(families[name], None, "ct2", None, None).engine.name == "faster-whisper"
        assert pick_engine(families[name], None, "pytorch", None,
                           None).engine.name == "transformers"
    assert families["whisper-tiny.en"].multilingual is False
    lessac = families["piper-en_US-lessac-medium"]
    assert lessac.hub_files[0] == "en/en_US/lessac/medium/en_US-lessac-medium.onnx"
    assert pick_engine(lessac, None, None, None, None).engine.name == "piper"
    kokoro = families["Kokoro-82M"]
    assert kokoro.model_specs[0].model_id == "hexgrad/Kokoro-82M"
    # The kokoro engine runs it; its library is not installed here, and the refusal says so.
    assert engine_by_name("kokoro").cannot_run(kokoro) is None
    with pytest.raises(BadRequest, match=r"kokoro: not installed \(missing kokoro\)"):
        pick_engine(kokoro, None, None, None, None)


def test_formats_are_told_by_the_files(tmp_path):
    whisper = _family("w", "whisper", "audio2text", whisper_tiny_en_folder())
    assert whisper.model_specs[0].model_format == "ct2"
    voice = _family("v", "piper", "text2audio", piper_voice_folder())
    assert voice.model_specs[0].model_format == "onnx"
    transformers = tmp_path / "hf-whisper"
    transformers.mkdir()
    (transformers / "config.json").write_text('{"architectures": '
                                              '["WhisperForConditionalGeneration"]}')
    (transformers / "model.safetensors").write_bytes(b"")
    assert _family("t", "whisper", "audio2text", transformers).model_specs[0].model_format \
        == "pytorch"
    builtin = builtin_families("audio")["whisper-tiny.en"]
    assert infer_model_format(str(whisper_tiny_en_folder()), builtin) == "ct2"
    assert infer_model_format(str(transformers), builtin) == "pytorch"


@pytest.mark.parametrize("response_format", sorted(set(SPEECH_FORMATS) - {"pcm"}))
def test_every_speech_format_reads_back_as_the_same_length(voice, response_format):
    pieces = list(voice.synthesize("Hello there. How are you?", "joe", 1.0))
    seconds = sum(p.size for p in pieces) / voice.sample_rate
    data = encode_speech(pieces, response_format, voice.sample_rate)
    decoded = decode_audio(data, 16000)
    # Encoders pad a frame or two at the ends (AAC, Opus): within a tenth of a second.
    assert abs(decoded.size / 16000 - seconds) < 0.1, (response_format, seconds)


def test_uploads_that_are_not_audio_are_refused():
    for data, code in ((b"", "invalid_audio"), (b"%PDF-1.7 not sound" * 50, "invalid_audio")):
        with pytest.raises(BadRequest) as refused:
            decode_audio(data, 16000)
        assert refused.value.code == code


def test_voice_names():
    assert pick_voice("alloy", ["joe"], "m") == "joe"
    assert pick_voice("JOE", ["joe"], "m") == "joe"
    assert pick_voice("", ["b", "a"], "m") == "b"
    kokoro = ["af_heart", "af_alloy", "am_echo"]
    assert pick_voice("alloy", kokoro, "m") == "af_alloy"
    assert pick_voice("echo", kokoro, "m") == "am_echo"
    assert pick_voice("nova", kokoro, "m") in kokoro
    with pytest.raises(BadRequest) as refused:
        pick_voice("darth", ["joe"], "m")
    assert "joe" in refused.value.message and refused.value.code == "unknown_voice"


def test_subtitle_formats():
    segments = [{"id": 0, "start": 0.0, "end": 2.5, "text": " Hello there."},
                {"id": 1, "start": 3661.25, "end": 3662.0, "text": " Bye.",
                 "words": [{"word": " Bye.", "start": 3661.25, "end": 3662.0,
                            "probability": 0.9}]}]
    assert srt(segments) == ("1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
                             "2\n01:01:01,250 --> 01:01:02,000\nBye.\n")
    assert vtt(segments).startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n")
    transcript = {"task": "transcribe", "language": "en", "duration": 3662.0,
                  "text": "Hello there. Bye.", "segments": segments}
    words_only = verbose_json(transcript, ["word"])
    assert "segments" not in words_only and words_only["words"][0]["word"] == "Bye."
    assert "words" not in verbose_json(transcript, [])["segments"][1]


def test_concurrent_requests_share_one_batch_and_read_the_same(whisper, spoken):
    async def run() -> tuple[list[dict], dict]:
        with ThreadPoolExecutor(max_workers=1) as engine_thread:
            service = TranscriptionService(whisper, _family("w", "whisper", "audio2text",
                                                            whisper_tiny_en_folder()),
                                           "w", FasterWhisperOptions(), engine_thread)
            options = {"task": "transcribe"}
            alone = await service.transcribe(spoken, options)
            together = await asyncio.gather(*(service.transcribe(spoken, options)
                                              for _ in range(3)))
            return [alone, *together], service.stats()

    results, stats = asyncio.run(run())
    assert stats["max_size"] >= 2  # the three concurrent uploads' chunks in one call
    assert {r["text"] for r in results} == {results[0]["text"]}
    assert word_error_rate(TEXT, results[0]["text"]) <= 0.1


def test_word_timestamps_are_on_the_upload_clock(whisper, voice):
    """Two seconds of silence before the speech: VAD cuts them, the times put them back."""
    pieces = list(voice.synthesize(TEXT, "joe", 1.0))
    silence = np.zeros(2 * voice.sample_rate, dtype=np.float32)
    data = encode_speech([silence, *pieces], "wav", voice.sample_rate)

    async def run() -> dict:
        with ThreadPoolExecutor(max_workers=1) as engine_thread:
            service = TranscriptionService(whisper, _family("w", "whisper", "audio2text",
                                                            whisper_tiny_en_folder()),
                                           "w", FasterWhisperOptions(), engine_thread)
            return await service.transcribe(data, {"word_timestamps": True})

    words = [w for s in asyncio.run(run())["segments"] for w in s["words"]]
    assert re.sub(r"\W", "", words[0]["word"]).lower() == "the"
    assert 1.5 < words[0]["start"] < 2.6, words[0]  # VAD pads speech by a few hundred ms


def test_speech_streams_a_piece_per_sentence(voice):
    async def run() -> list:
        with ThreadPoolExecutor(max_workers=1) as engine_thread:
            service = SpeechService(voice, _family("v", "piper", "text2audio",
                                                   piper_voice_folder()), "v", PiperOptions(),
                                    engine_thread)
            return [item async for item in service.speech_stream(TEXT, "alloy", "pcm", 1.0)]

    items = asyncio.run(run())
    assert items[0] == {"media_type": "audio/pcm", "sample_rate": 22050, "voice": "joe"}
    assert len(items[1:-1]) == 2  # two sentences, each sent when made
    pcm = b"".join(items[1:-1])  # 16-bit samples: the last item says how long they last
    assert items[-1] == {"seconds": pytest.approx(len(pcm) / 2 / 22050)}
    with av.open(__import__("io").BytesIO(encode_speech(
            [np.frombuffer(pcm, "<i2").astype(np.float32) / 32767], "wav",
            22050))) as container:
        assert container.streams.audio[0].codec_context.sample_rate == 22050


def test_speech_holds_the_launchs_request_limit_until_a_stream_ends(voice):
    """request_limits=1: a second stream is refused while the first runs, even one the client
    left half read; once it is closed the place is free again."""
    async def run() -> tuple[TooManyRequests, int, list]:
        with ThreadPoolExecutor(max_workers=1) as engine_thread:
            service = SpeechService(voice, _family("v", "piper", "text2audio",
                                                   piper_voice_folder()), "v", PiperOptions(),
                                    engine_thread,
                                    RequestLimits(max_requests=1))
            first = service.speech_stream(TEXT, "alloy", "pcm", 1.0)
            await first.__anext__()  # accepted: it holds the place
            second = service.speech_stream(TEXT, "alloy", "pcm", 1.0)
            with pytest.raises(TooManyRequests) as refused:
                await second.__anext__()
            await first.aclose()  # the client went away mid-stream
            left = service.in_progress
            return refused.value, left, [item async for item in
                                         service.speech_stream(TEXT, "alloy", "pcm", 1.0)]

    refused, left, items = asyncio.run(run())
    assert refused.code == "model_busy" and "limit is 1" in refused.message
    assert left == 0
    assert items[0]["voice"] == "joe" and len(items[1:-1]) == 2
