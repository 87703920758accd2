"""Audio through a real `fleet local` with API keys on: the Piper voice en_US-joe-medium and
Whisper tiny.en (faster-whisper), both real models from pip packages (tests/audio_builders.py),
registered in Xinference's custom audio JSON and launched with model_type audio. The voice
speaks, Whisper transcribes it back (word error rate at most 10 %), through the openai SDK,
xinference-client, Fleet's client and CLI; every response format is read back by a reader for
it (PyAV for audio, an srt/vtt parser for subtitles); streamed speech sends its first bytes
before the last sentence is made; bad input is a clear 4xx and the models serve on."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from fleet.client import Client
from tests.audio_builders import piper_voice_folder, whisper_tiny_en_folder, word_error_rate
from tests.conftest import FleetProcess, free_port
from tests.usage_checks import now_iso, usage_totals

KEY = "sk-e2e-audio-admin-0123"
VOICE = "joe-voice"
WHISPER = "whisper-tiny-en-local"
TEXT = ("The quick brown fox jumps over the lazy dog. "
        "Meeting notes are ready for review on Monday morning.")
LONG_TEXT = " ".join([
    "The first sentence is short.",
    "Then a second sentence follows, somewhat longer than the first one was.",
    "A third sentence keeps the voice busy for a few more seconds of audio.",
    "The fourth sentence talks about the weather, which is mild and grey today.",
    "And the fifth sentence ends this little speech about nothing in particular.",
])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    home = tmp_path_factory.mktemp("fleet-home")
    port = free_port()
    server = FleetProcess(["local", "-p", str(port)], home, port,
                          env={"FLEET_API_KEY": KEY, "FLEET_MAX_SPEECH_CHARS": "2000",
                               "FLEET_MAX_AUDIO_SECONDS": "60"})
    yield server.wait_ready()
    server.stop()


@pytest.fixture(scope="module")
def fleet(cluster: FleetProcess) -> Client:
    return Client(cluster.endpoint, api_key=KEY)


@pytest.fixture(scope="module")
def models(fleet: Client) -> dict[str, str]:
    # Xinference's custom audio JSON, folders only: the files say which engine runs them.
    fleet.register_model("audio", {
        "version": 2, "model_name": WHISPER, "model_family": "whisper",
        "model_ability": ["audio2text"], "multilingual": False,
        "model_uri": f"file://{whisper_tiny_en_folder()}"}, persist=False)
    fleet.register_model("audio", {
        "version": 2, "model_name": VOICE, "model_family": "piper",
        "model_ability": ["text2audio"], "multilingual": False,
        "model_uri": f"file://{piper_voice_folder()}"}, persist=False)
    return {"stt": fleet.launch_model(WHISPER, model_type="audio", model_uid=WHISPER),
            "tts": fleet.launch_model(VOICE, model_type="audio", model_uid=VOICE)}


@pytest.fixture(scope="module")
def openai_sdk(cluster: FleetProcess):
    from openai import OpenAI

    return OpenAI(base_url=f"{cluster.endpoint}/v1", api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def http(cluster: FleetProcess) -> httpx.Client:
    return httpx.Client(base_url=cluster.endpoint, timeout=300,
                        headers={"Authorization": f"Bearer {KEY}"})


@pytest.fixture(scope="module")
def spoken(http: httpx.Client, models: dict[str, str]) -> bytes:
    """TEXT as a WAV file, spoken by the voice through the API."""
    response = http.post("/v1/audio/speech", json={"model": models["tts"], "input": TEXT,
                                                   "voice": "alloy", "response_format": "wav"})
    assert response.status_code == 200, response.text
    return response.content


def _decode(data: bytes) -> tuple[np.ndarray, int, str]:
    """Samples (mono float), rate and container name, read back by PyAV."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate
        samples = [frame.to_ndarray().astype(np.float32).reshape(frame.to_ndarray().shape[0], -1)
                   .mean(axis=0) for frame in container.decode(stream)]
        return np.concatenate(samples), rate, container.format.name


def test_engines_are_told_by_the_files(fleet: Client, models: dict[str, str]):
    described = {uid: fleet.describe_model(uid) for uid in models.values()}
    assert described[models["stt"]]["model_engine"] == "faster-whisper"
    assert described[models["tts"]]["model_engine"] == "piper"
    assert described[models["stt"]]["model_format"] == "ct2"


def test_round_trip_speech_then_transcription(http: httpx.Client, models, spoken: bytes):
    samples, rate, _ = _decode(spoken)
    assert rate == 22050 and 3.0 < samples.size / rate < 12.0
    response = http.post("/v1/audio/transcriptions", data={"model": models["stt"]},
                         files={"file": ("speech.wav", spoken, "audio/wav")})
    assert response.status_code == 200, response.text
    text = response.json()["text"]
    assert word_error_rate(TEXT, text) <= 0.10, text


def test_round_trip_through_the_openai_sdk(openai_sdk, models):
    speech = openai_sdk.audio.speech.create(model=models["tts"], voice="nova", input=TEXT,
                                            response_format="mp3")
    mp3 = speech.read()
    samples, _, container = _decode(mp3)
    assert container == "mp3" and samples.size > 0
    transcript = openai_sdk.audio.transcriptions.create(
        model=models["stt"], file=("speech.mp3", mp3, "audio/mpeg"))
    assert word_error_rate(TEXT, transcript.text) <= 0.10, transcript.text


@pytest.mark.parametrize("response_format, container", [
    ("mp3", "mp3"), ("opus", "ogg"), ("aac", "aac"), ("flac", "flac"), ("wav", "wav")])
def test_every_speech_format_decodes(http, models, response_format, container):
    response = http.post("/v1/audio/speech", json={
        "model": models["tts"], "input": "Hello there.", "response_format": response_format})
    assert response.status_code == 200, response.text
    samples, rate, name = _decode(response.content)
    assert container in name.split(",")
    assert 0.3 < samples.size / rate < 5.0
    assert float(np.abs(samples).max()) > 0.05  # speech, not silence


def test_pcm_is_raw_16_bit_samples_at_the_rate_the_header_says(http, models):
    response = http.post("/v1/audio/speech", json={
        "model": models["tts"], "input": "Hello there.", "response_format": "pcm"})
    assert response.status_code == 200
    rate = int(response.headers["x-sample-rate"])
    samples = np.frombuffer(response.content, dtype="<i2")
    assert rate == 22050 and 0.3 < samples.size / rate < 5.0 and np.abs(samples).max() > 1000


def test_speed_changes_the_length(http, models):
    def seconds(speed: float) -> float:
        response = http.post("/v1/audio/speech", json={
            "model": models["tts"], "input": TEXT, "response_format": "pcm", "speed": speed})
        return len(response.content) / 2 / int(response.headers["x-sample-rate"])

    assert seconds(2.0) < 0.7 * seconds(1.0)


def _srt_cues(text: str) -> list[tuple[float, float, str]]:
    clock = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
    cues = []
    for block in re.split(r"\n\s*\n", text.strip()):
        match = re.search(clock + r" --> " + clock, block)
        if not match:
            continue
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, match.groups())
        body = block[match.end():].strip()
        cues.append((h1 * 3600 + m1 * 60 + s1 + ms1 / 1000,
                     h2 * 3600 + m2 * 60 + s2 + ms2 / 1000, body))
    return cues


def test_every_transcript_format(http, models, spoken):
    def transcribe(response_format: str, **extra) -> httpx.Response:
        response = http.post("/v1/audio/transcriptions", files={
            "file": ("speech.wav", spoken, "audio/wav")},
            data={"model": models["stt"], "response_format": response_format, **extra})
        assert response.status_code == 200, response.text
        return response

    assert set(transcribe("json").json()) == {"text"}
    text = transcribe("text")
    assert text.headers["content-type"].startswith("text/plain")
    assert word_error_rate(TEXT, text.text) <= 0.10
    srt = transcribe("srt").text
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d\d\d --> ", srt)
    cues = _srt_cues(srt)
    assert cues and all(0 <= start < end <= 12 for start, end, _ in cues)
    assert word_error_rate(TEXT, " ".join(c[2] for c in cues)) <= 0.10
    vtt = transcribe("vtt").text
    assert vtt.startswith("WEBVTT\n\n")
    assert word_error_rate(TEXT, " ".join(c[2] for c in _srt_cues(vtt))) <= 0.10
    verbose = transcribe("verbose_json", **{"timestamp_granularities[]": ["word", "segment"]})
    body = verbose.json()
    assert body["language"] == "en" and body["task"] == "transcribe"
    assert 3.0 < body["duration"] < 12.0
    assert body["segments"] and body["segments"][0]["start"] >= 0
    words = body["words"]
    assert [w["word"].lower().strip(".,") for w in words[:3]] == ["the", "quick", "brown"]
    assert all(w["start"] <= w["end"] for w in words)
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:], strict=False))


def test_streamed_transcription_as_openai_streams_it(openai_sdk, models, spoken):
    events = list(openai_sdk.audio.transcriptions.create(
        model=models["stt"], file=("speech.wav", spoken, "audio/wav"), stream=True))
    kinds = [event.type for event in events]
    assert kinds[-1] == "transcript.text.done" and "transcript.text.delta" in kinds
    deltas = "".join(e.delta for e in events if e.type == "transcript.text.delta")
    assert word_error_rate(TEXT, deltas) <= 0.10
    assert word_error_rate(TEXT, events[-1].text) <= 0.10


def test_the_seconds_heard_and_spoken_are_in_the_usage(http, openai_sdk, models, spoken):
    """Transcriptions count the input's seconds, whole and streamed; speech its output's."""
    start = now_iso()
    whole = http.post("/v1/audio/transcriptions", files={"file": ("a.wav", spoken, "audio/wav")},
                      data={"model": models["stt"], "response_format": "verbose_json"})
    list(openai_sdk.audio.transcriptions.create(
        model=models["stt"], file=("speech.wav", spoken, "audio/wav"), stream=True))
    heard = usage_totals(http, start, models["stt"], requests=2)
    assert heard["audio_seconds"] == pytest.approx(2 * whole.json()["duration"], abs=0.002)
    pcm = http.post("/v1/audio/speech", json={"model": models["tts"], "input": TEXT,
                                              "response_format": "pcm"})
    first = usage_totals(http, start, models["tts"], requests=1)
    assert first["audio_seconds"] == pytest.approx(len(pcm.content) / 2 / 22050, abs=0.002), \
        first
    events = http.post("/v1/audio/speech", json={"model": models["tts"], "input": TEXT,
                                                 "response_format": "pcm",
                                                 "stream_format": "sse"})
    assert pcm.status_code == events.status_code == 200
    streamed = b"".join(base64.b64decode(json.loads(line[6:])["audio"])
                        for line in events.text.splitlines() if '"speech.audio.delta"' in line)
    samples = (len(pcm.content) + len(streamed)) / 2  # 16-bit samples at 22050 Hz
    spoke = usage_totals(http, start, models["tts"], requests=2)
    assert spoke["audio_seconds"] == pytest.approx(samples / 22050, abs=0.002)


def test_streamed_speech_starts_before_the_text_is_spoken(cluster, models):
    """The first bytes come when the first sentence is made: well before the whole answer."""
    arrivals: list[tuple[float, int]] = []
    with httpx.Client(base_url=cluster.endpoint, timeout=300,
                      headers={"Authorization": f"Bearer {KEY}"}) as client:
        started = time.monotonic()
        with client.stream("POST", "/v1/audio/speech", json={
                "model": models["tts"], "input": LONG_TEXT, "response_format": "pcm"}) as response:
            assert response.status_code == 200
            for chunk in response.iter_raw():
                arrivals.append((time.monotonic() - started, len(chunk)))
    first, last = arrivals[0][0], arrivals[-1][0]
    total = sum(size for _, size in arrivals)
    assert total / 2 / 22050 > 10  # five sentences of speech
    assert first < 0.5 * last, arrivals
    # Bytes before the end: the first sentence's worth came long before the last.
    early = sum(size for at, size in arrivals if at <= first + 0.01)
    assert early < 0.5 * total


def test_concurrent_transcriptions_share_batches(http, fleet: Client, models, spoken):
    results: list[str] = []

    def one() -> None:
        response = http.post("/v1/audio/transcriptions", data={"model": models["stt"]},
                             files={"file": ("speech.wav", spoken, "audio/wav")})
        results.append(response.json()["text"])

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(word_error_rate(TEXT, r) <= 0.10 for r in results)
    batch = fleet.replicas(models["stt"])[0]["batch"]
    assert batch["max_size"] >= 2, batch  # requests whose chunks were decoded in one call


def test_xinference_client_drives_both_models(cluster, models):
    from xinference_client import RESTfulClient

    client = RESTfulClient(cluster.endpoint, api_key=KEY)
    voice = client.get_model(models["tts"])
    wav = voice.speech(TEXT, voice="echo", response_format="wav")
    stt = client.get_model(models["stt"])
    answer = stt.transcriptions(wav, response_format="verbose_json")
    assert word_error_rate(TEXT, answer["text"]) <= 0.10
    streamed = b"".join(voice.speech("Hello there.", response_format="pcm", stream=True))
    assert len(streamed) > 22050  # more than half a second of 16-bit samples


def test_fleet_client_and_cli(cluster, fleet: Client, models, tmp_path: Path):
    from fleet.client.audio import AudioModelHandle

    voice = fleet.get_model(models["tts"])
    assert isinstance(voice, AudioModelHandle)
    flac = voice.speech(TEXT, voice="joe", response_format="flac")
    assert _decode(flac)[2] == "flac"
    answer = fleet.get_model(models["stt"]).transcriptions(flac, response_format="json")
    assert word_error_rate(TEXT, answer["text"]) <= 0.10
    out = tmp_path / "speech.mp3"
    env = {"FLEET_API_KEY": KEY}
    base = [sys.executable, "-m", "fleet"]
    spoken = subprocess.run([*base, "speak", "-e", cluster.endpoint, "-u", models["tts"],
                             "--voice", "alloy", "-o", str(out), TEXT],
                            capture_output=True, text=True, env={**_env(), **env}, timeout=120)
    assert spoken.returncode == 0, spoken.stderr
    assert _decode(out.read_bytes())[2] == "mp3"
    heard = subprocess.run([*base, "transcribe", "-e", cluster.endpoint, "-u", models["stt"],
                            str(out)], capture_output=True, text=True, env={**_env(), **env},
                           timeout=120)
    assert heard.returncode == 0, heard.stderr
    assert word_error_rate(TEXT, heard.stdout) <= 0.10


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.mark.parametrize("body, status, code", [
    ({"voice": "darth-vader"}, 400, "unknown_voice"),
    ({"response_format": "ogg-vorbis"}, 400, None),
    ({"input": "x" * 2001}, 400, "input_too_long"),
    ({"input": "   "}, 400, "empty_input"),
    ({"speed": 9}, 400, None),
])
def test_bad_speech_requests_are_refused_and_the_voice_serves_on(http, models, body, status,
                                                                 code):
    response = http.post("/v1/audio/speech", json={
        "model": models["tts"], "input": "Hello.", "response_format": "wav", **body})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and (code is None or error["code"] == code), error
    assert http.post("/v1/audio/speech", json={"model": models["tts"], "input": "Still here.",
                                               "response_format": "wav"}).status_code == 200


def _wav_seconds(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        samples = (np.random.default_rng(0).standard_normal(int(16000 * seconds)) * 300)
        frame = av.AudioFrame.from_ndarray(samples.astype(np.int16)[None, :], format="s16",
                                           layout="mono")
        frame.sample_rate = 16000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize("files, data, code", [
    ({"file": ("empty.wav", b"", "audio/wav")}, {}, "invalid_audio"),
    ({"file": ("notes.txt", b"these are not sounds at all " * 40, "text/plain")}, {},
     "invalid_audio"),
    ({"file": ("long.wav", _wav_seconds(61), "audio/wav")}, {}, "audio_too_long"),
    ({"file": ("speech.wav", _wav_seconds(1), "audio/wav")}, {"response_format": "mp4"}, None),
    ({"file": ("speech.wav", _wav_seconds(1), "audio/wav")}, {"language": "de"},
     "unsupported_language"),
    ({}, {}, "invalid_content_type"),  # no file: not even a multipart body
])
def test_bad_transcription_requests_are_refused_and_whisper_serves_on(http, models, spoken,
                                                                      files, data, code):
    response = http.post("/v1/audio/transcriptions", files=files or None,
                         data={"model": models["stt"], **data})
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert error["message"] and (code is None or error["code"] == code), error
    ok = http.post("/v1/audio/transcriptions", data={"model": models["stt"]},
                   files={"file": ("speech.wav", spoken, "audio/wav")})
    assert ok.status_code == 200 and word_error_rate(TEXT, ok.json()["text"]) <= 0.10


def test_english_only_whisper_refuses_to_translate(http, models, spoken):
    response = http.post("/v1/audio/translations", data={"model": models["stt"]},
                         files={"file": ("speech.wav", spoken, "audio/wav")})
    assert response.status_code == 400 and response.json()["error"]["code"] == "unsupported_task"


def test_a_voice_does_not_transcribe(http, models, spoken):
    response = http.post("/v1/audio/transcriptions", data={"model": models["tts"]},
                         files={"file": ("speech.wav", spoken, "audio/wav")})
    assert response.status_code == 400, response.text
    assert json.loads(response.text)["error"]["message"]
