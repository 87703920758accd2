"""The image and audio playgrounds in Chromium against a real `fleet local`: text to image on
the tests' tiny Stable Diffusion pipeline, OCR on PP-OCRv4, and a round trip through the
browser: the Piper voice speaks a sentence in the speech playground, and the file it made,
uploaded in the transcription playground, is read back by Whisper tiny.en."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.audio_builders import piper_voice_folder, whisper_tiny_en_folder, word_error_rate
from tests.image_builders import tiny_sd_pipeline_folder
from tests.ui.conftest import PageWatch, screenshot

SENTENCE = "The weather in Berlin is sunny and warm today."


@pytest.fixture(scope="module")
def media_models(client) -> dict[str, str]:
    """uids of the four models, launched through the API (the catalogue's launch form has
    its own tests)."""
    client.register_model("image", {
        "version": 2, "model_name": "ui-tiny-sd", "model_family": "stable_diffusion",
        "model_ability": ["text2image"], "model_uri": f"file://{tiny_sd_pipeline_folder()}"},
        persist=False)
    for name, family, ability, folder in (
            ("ui-voice", "piper", "text2audio", piper_voice_folder()),
            ("ui-whisper", "whisper", "audio2text", whisper_tiny_en_folder())):
        client.register_model("audio", {
            "version": 2, "model_name": name, "model_family": family, "model_ability": [ability],
            "multilingual": False, "model_uri": f"file://{folder}"}, persist=False)
    return {"image": client.launch_model("ui-tiny-sd", model_type="image", model_uid="sd"),
            "ocr": client.launch_model("PP-OCRv4", model_type="image", model_uid="ocr"),
            "voice": client.launch_model("ui-voice", model_type="audio", model_uid="voice"),
            "whisper": client.launch_model("ui-whisper", model_type="audio", model_uid="whisper")}


def test_text_to_image_shows_the_picture(page, watch: PageWatch, local_cluster, media_models):
    page.goto(f"{local_cluster.endpoint}/ui/playground/{media_models['image']}")
    page.fill("#image-prompt", "a lighthouse")
    page.select_option("#image-size", "256x256")
    page.fill("#image-steps", "2")
    page.fill("#image-seed", "3")
    page.get_by_role("button", name="Generate").click()
    picture = page.get_by_test_id("generated-image")
    expect(picture).to_be_visible(timeout=60_000)
    assert page.evaluate("document.querySelector('[data-testid=generated-image]').naturalWidth") \
        == 256
    screenshot(page, "playground-image")
    assert watch.problems == []


def test_ocr_reads_an_uploaded_image(page, watch: PageWatch, local_cluster, media_models,
                                     tmp_path: Path):
    from tests.engines.test_rapidocr import LINES, text_image

    scan = tmp_path / "scan.png"
    text_image().save(scan)
    page.goto(f"{local_cluster.endpoint}/ui/playground/{media_models['ocr']}")
    page.set_input_files("#ocr-file", str(scan))
    page.get_by_role("button", name="Read").click()
    table = page.get_by_test_id("ocr-lines")
    expect(table).to_contain_text(LINES[0], timeout=60_000)
    expect(table).to_contain_text(LINES[1])
    assert watch.problems == []


def test_speech_made_in_one_playground_is_transcribed_in_the_other(
        page, watch: PageWatch, local_cluster, media_models, tmp_path: Path):
    endpoint = local_cluster.endpoint
    page.goto(f"{endpoint}/ui/playground/{media_models['voice']}")
    page.fill("#speech-input", SENTENCE)
    page.fill("#speech-voice", "alloy")  # OpenAI's name, answered by the model's one voice
    page.select_option("#speech-format", "wav")
    with page.expect_response("**/v1/audio/speech") as answered:
        page.get_by_role("button", name="Speak").click()
    assert answered.value.headers["content-type"] == "audio/wav"
    expect(page.get_by_test_id("speech-stats")).to_contain_text("first audio after")
    screenshot(page, "playground-speech")
    # The page's own audio, as the browser holds it, goes back in as an upload.
    spoken = page.evaluate("""async () => {
      const blob = await (await fetch(document.querySelector('[data-testid=speech-audio]').src)).blob();
      const bytes = new Uint8Array(await blob.arrayBuffer());
      let text = ''; for (const b of bytes) text += String.fromCharCode(b);
      return btoa(text); }""")
    wav = tmp_path / "spoken.wav"
    wav.write_bytes(base64.b64decode(spoken))
    assert wav.read_bytes()[:4] == b"RIFF"

    page.goto(f"{endpoint}/ui/playground/{media_models['whisper']}")
    page.set_input_files("#transcription-file", str(wav))
    page.get_by_role("button", name="Transcribe").click()
    text = page.get_by_test_id("transcript-text")
    expect(text).not_to_be_empty(timeout=60_000)
    assert word_error_rate(SENTENCE, text.inner_text()) <= 0.2, text.inner_text()
    expect(page.get_by_test_id("transcript-segments")).to_contain_text("0:00")
    screenshot(page, "playground-transcription")
    assert watch.problems == []
