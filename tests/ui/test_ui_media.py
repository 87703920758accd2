"""The image and audio playgrounds in Chromium against a real `fleet local`: text to image on
the tests' tiny Stable Diffusion pipeline, OCR on PP-OCRv4, and a round trip through the
browser: the Piper voice speaks a sentence in the speech playground, and the file it made,
uploaded in the transcription playground, is read back by Whisper tiny.en."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
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


def test_the_chat_playground_sends_images_to_a_model_that_sees(
        page, watch: PageWatch, local_cluster, client, tmp_path: Path):
    from tests.vision_builders import TOKENS_PER_IMAGE, build_tiny_llava, png

    folder = build_tiny_llava(tmp_path / "llava")
    client.register_model("LLM", {
        "version": 2, "model_name": "ui-tiny-llava", "model_ability": ["chat", "vision"],
        "context_length": 512, "stop": ["<|im_end|>"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 0,
                         "quantizations": ["none"], "model_uri": str(folder)}]}, persist=False)
    uid = client.launch_model("ui-tiny-llava", model_type="LLM", model_engine="transformers",
                              model_path=str(folder))
    pictures = []
    for name, color in (("red.png", (230, 20, 20)), ("blue.png", (20, 20, 230))):
        pictures.append(tmp_path / name)
        pictures[-1].write_bytes(png(color))
    page.goto(f"{local_cluster.endpoint}/ui/playground/{uid}")
    page.set_input_files("#chat-images", [str(p) for p in pictures])
    expect(page.get_by_test_id("chat-image")).to_have_count(2)
    page.get_by_role("button", name="Remove blue.png").click()
    expect(page.get_by_test_id("chat-image")).to_have_count(1)
    page.fill("#chat-input", "What is in the picture?")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click("#chat-send")
    parts = sent.value.post_data_json["messages"][-1]["content"]
    assert [part["type"] for part in parts] == ["text", "image_url"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    stats = page.get_by_test_id("answer-stats")
    expect(stats).to_contain_text("prompt tokens", timeout=60_000)
    # The image reached the model: its tokens are in the prompt's count, beside the text's.
    prompt_tokens = int(stats.inner_text().split(" prompt tokens")[0])
    text_only = httpx.post(f"{local_cluster.endpoint}/v1/chat/completions", timeout=60, json={
        "model": uid, "max_tokens": 1,
        "messages": [{"role": "user", "content": "What is in the picture?"}]}).json()
    assert prompt_tokens == text_only["usage"]["prompt_tokens"] + TOKENS_PER_IMAGE
    # The log keeps the user's picture beside the text; the next turn takes no image by itself.
    expect(page.get_by_test_id("message-user").get_by_test_id("chat-image")).to_have_count(1)
    expect(page.locator("#chat-images ~ .chat-images")).to_have_count(0)
    screenshot(page, "playground-chat-image")
    assert watch.problems == []
