"""Audio under load: Fleet's HTTP API against faster-whisper and Piper called in-process on the
same models and the same files, in the same run.

The models are the tests' real ones (tests/audio_builders.py): Whisper tiny.en (CTranslate2)
and the Piper voice en_US-joe-medium, registered and launched on a real `fleet local`. The
audio is a passage spoken by that voice (about 25 s, WAV). Measured in alternating windows
(common.timed_calls): transcription throughput as audio seconds per wall second (the inverse
of the real-time factor), in-process one file at a time (BatchedInferencePipeline.transcribe,
decoding included, as Fleet decodes each upload) and batched (four files' worth in one call:
the chunks of four copies, batch size 8), and Fleet at concurrency 1 and 4. Then time to the
first audio byte of a streamed answer (pcm) against Piper in-process making and encoding its
first sentence. Prints JSON with the ratios the targets are stated in (>= 0.95 of in-process
at concurrency 1, >= 0.9 of in-process batched at concurrency 4, first byte <= in-process +
20 ms).

    python bench/audio_load.py --duration 60 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import fleet_local, timed_calls  # noqa: E402

STT, TTS = "bench-whisper", "bench-voice"
CONCURRENCY = 4
PASSAGE = " ".join([
    "Good morning everyone, and thank you for joining the weekly planning meeting.",
    "First, the release is on track for the end of the month, with two small fixes left.",
    "Second, the support team asked for better notes on the changes in each version.",
    "Third, we will move the review on Thursday to the afternoon, because of the holiday.",
    "Finally, please send me your updates before Friday so that I can write the summary.",
])
SENTENCE = ("The first sentence of a longer answer arrives before the rest is made. "
            "Then the second sentence follows it, and a third one after that.")


def _speak_wav(folder: Path, text: str) -> bytes:
    from fleet.catalogue.schemas import AudioFamily
    from fleet.engines.audio_codec import encode_speech
    from fleet.engines.piper_tts import PiperSpeech

    family = AudioFamily(model_name=TTS, model_family="piper", model_ability=["text2audio"],
                         model_specs=[{"model_format": "onnx"}])
    voice = PiperSpeech(str(folder), family, "cpu")
    voice.load()
    return encode_speech(list(voice.synthesize(text, voice.voices()[0], 1.0)), "wav",
                         voice.sample_rate)


def _in_process_whisper(folder: Path, wav: bytes) -> tuple[Any, Any, float]:
    import io

    from faster_whisper import BatchedInferencePipeline, WhisperModel
    from faster_whisper.audio import decode_audio

    model = WhisperModel(str(folder), device="cpu", local_files_only=True)
    pipeline = BatchedInferencePipeline(model)
    seconds = decode_audio(io.BytesIO(wav)).shape[0] / 16000

    def one(_: int) -> str:
        segments, _info = pipeline.transcribe(io.BytesIO(wav), batch_size=8)
        return "".join(s.text for s in segments)

    def four(_: int) -> str:
        audio = decode_audio(io.BytesIO(wav))
        gap = np.zeros(16000, dtype=np.float32)  # a second of silence: VAD cuts there
        joined = np.concatenate([audio, gap, audio, gap, audio, gap, audio])
        segments, _info = pipeline.transcribe(joined, batch_size=8)
        return "".join(s.text for s in segments)

    return one, four, seconds


def _piper_first_byte(folder: Path) -> float:
    """Seconds to the first encoded bytes of SENTENCE, in-process (median of 7)."""
    from fleet.catalogue.schemas import AudioFamily
    from fleet.engines.audio_codec import SpeechEncoder
    from fleet.engines.piper_tts import PiperSpeech

    family = AudioFamily(model_name=TTS, model_family="piper", model_ability=["text2audio"],
                         model_specs=[{"model_format": "onnx"}])
    voice = PiperSpeech(str(folder), family, "cpu")
    voice.load()
    times = []
    for _ in range(7):
        started = time.perf_counter()
        encoder = SpeechEncoder("pcm", voice.sample_rate)
        first = encoder.add(next(iter(voice.synthesize(SENTENCE, voice.voices()[0], 1.0))))
        assert first
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _fleet_first_byte(endpoint: str) -> float:
    times = []
    with httpx.Client(base_url=endpoint, timeout=120) as http:
        for _ in range(7):
            started = time.perf_counter()
            with http.stream("POST", "/v1/audio/speech", json={
                    "model": TTS, "input": SENTENCE, "response_format": "pcm"}) as response:
                chunks = response.iter_raw()
                next(chunks)
                times.append(time.perf_counter() - started)
                for _chunk in chunks:
                    pass
    return statistics.median(times[2:])


def _fleet_load(endpoint: str, wav: bytes, concurrency: int,
                window: float) -> tuple[int, float]:
    """Files transcribed in `window` seconds by `concurrency` closed-loop clients."""
    done = [0]
    stop_at = time.perf_counter() + window

    def client() -> None:
        with httpx.Client(base_url=endpoint, timeout=300) as http:
            while time.perf_counter() < stop_at:
                response = http.post("/v1/audio/transcriptions", data={"model": STT},
                                     files={"file": ("passage.wav", wav, "audio/wav")})
                response.raise_for_status()
                done[0] += 1

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done[0], time.perf_counter() - started


def _launch(endpoint: str, whisper: Path, voice: Path) -> None:
    with httpx.Client(base_url=endpoint, timeout=600) as http:
        for name, family, ability, folder in ((STT, "whisper", "audio2text", whisper),
                                              (TTS, "piper", "text2audio", voice)):
            http.post("/v1/model_registrations/audio", json={"persist": False, "model": {
                "version": 2, "model_name": name, "model_family": family,
                "model_ability": [ability], "multilingual": False,
                "model_uri": f"file://{folder}"}}).raise_for_status()
            http.post("/v1/models", json={"model_name": name, "model_type": "audio",
                                          "model_uid": name}).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds per measurement, over all rounds")
    parser.add_argument("--rounds", type=int, default=3, help="alternating windows of each side")
    args = parser.parse_args()

    from tests.audio_builders import piper_voice_folder, whisper_tiny_en_folder

    whisper, voice = whisper_tiny_en_folder(), piper_voice_folder()
    wav = _speak_wav(voice, PASSAGE)
    one, four, seconds = _in_process_whisper(whisper, wav)
    window = max(2.0, args.duration / args.rounds)
    rounds = []
    with fleet_local() as endpoint:
        _launch(endpoint, whisper, voice)
        _fleet_load(endpoint, wav, 1, 1.0)  # warm up
        for _ in range(args.rounds):
            single = timed_calls(one, window)
            batched = timed_calls(four, window)
            c1_files, c1_s = _fleet_load(endpoint, wav, 1, window)
            c4_files, c4_s = _fleet_load(endpoint, wav, CONCURRENCY, window)
            rounds.append({"in_process_one_by_one": seconds * len(single) / sum(single),
                           "in_process_batched": 4 * seconds * len(batched) / sum(batched),
                           "fleet_c1": seconds * c1_files / c1_s,
                           "fleet_c4": seconds * c4_files / c4_s})
        fleet_first = _fleet_first_byte(endpoint)
    piper_first = _piper_first_byte(voice)

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rounds), 2)

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(r[a] / r[b] for r in rounds), 3)

    print(json.dumps({
        "models": "Whisper tiny.en (faster-whisper, CTranslate2), Piper en_US-joe-medium",
        "audio_seconds_per_file": round(seconds, 2),
        "audio_seconds_per_second": {k: median(k) for k in rounds[0]},
        "real_time_factor": {k: round(1 / median(k), 4) for k in rounds[0]},
        "ratios": {"c1_vs_in_process_one_by_one": ratio("fleet_c1", "in_process_one_by_one"),
                   "c4_vs_in_process_batched": ratio("fleet_c4", "in_process_batched")},
        "first_audio_byte_ms": {"piper_in_process": round(piper_first * 1000, 1),
                                "fleet_streamed": round(fleet_first * 1000, 1),
                                "fleet_minus_in_process": round(
                                    (fleet_first - piper_first) * 1000, 1)},
        "targets": {"c1_vs_in_process_one_by_one": 0.95, "c4_vs_in_process_batched": 0.9,
                    "fleet_minus_in_process_ms": 20},
        "rounds": len(rounds),
    }, indent=2))


if __name__ == "__main__":
    main()
