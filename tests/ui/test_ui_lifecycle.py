"""The web UI against a real `fleet local` (no keys), in Chromium: launching real models from
the catalogue, the chat and embeddings playgrounds, terminating, the will-it-fit refusal,
registrations, every page without console errors or failed requests, a phone-sized screen and
the keyboard. One server for the module; each model is launched once."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.builders import _smollm2_gguf
from tests.ui.conftest import PHONE, PageWatch, screenshot

LAUNCH_TIMEOUT_MS = 120_000


def _launch_from_family_page(page, endpoint: str, family_path: str, uid: str, path: str,
                             variant: str | None = None, engine: str | None = None) -> None:
    page.goto(f"{endpoint}/ui/catalogue/{family_path}")
    if variant:
        page.select_option("#launch-variant", label=variant)
    if engine:
        page.select_option("#launch-engine", engine)
    page.fill("#launch-uid", uid)
    page.fill("#launch-path", path)
    # The estimate is asked again for these arguments before the launch may start.
    expect(page.get_by_test_id("estimate")).to_contain_text("Fits.")
    expect(page.get_by_test_id("estimate")).to_contain_text("RAM")  # the worker's free memory
    expect(page.locator("#launch-button")).to_be_enabled()
    page.click("#launch-button")
    expect(page.get_by_test_id("launch-ready")).to_be_visible(timeout=LAUNCH_TIMEOUT_MS)


@pytest.fixture(scope="module")
def smol_uid(local_cluster, client) -> str:
    """SmolLM2 on llama.cpp: launched through the UI by the chat test, or here when that test
    did not run first."""
    if "smol" not in client.list_models():
        client.launch_model("smollm2-instruct", model_type="LLM", model_engine="llama.cpp",
                            model_format="gguf", quantization="Q4_1", model_uid="smol",
                            model_path=str(_smollm2_gguf()))
    return "smol"


def test_launch_smollm2_from_the_catalogue_and_chat_streamed(page, watch: PageWatch, local_cluster,
                                                            client):
    endpoint = local_cluster.endpoint
    page.goto(f"{endpoint}/ui/catalogue?q=smollm2")
    page.get_by_role("link", name="smollm2-instruct").click()
    expect(page).to_have_url(re.compile(r"/ui/catalogue/LLM/smollm2-instruct$"))
    _launch_from_family_page(page, endpoint, "LLM/smollm2-instruct", "smol", str(_smollm2_gguf()),
                             variant="gguf · 0.135B · Q4_1", engine="llama.cpp")
    assert client.describe_model("smol")["model_engine"] == "llama.cpp"
    screenshot(page, "catalogue-launch")

    page.get_by_role("link", name="Open the playground").click()
    expect(page).to_have_url(re.compile(r"/ui/playground/smol$"))
    page.fill("#sampling-temperature", "0")
    page.fill("#chat-system", "You are a helpful assistant.")
    page.fill("#chat-input", "What is the capital of Germany?")
    # Count how often the answer's text changes while it arrives: a streamed answer grows.
    page.evaluate("""() => { window.__growth = new Set();
      new MutationObserver(() => { const n = document.querySelector(
        '[data-testid=message-assistant] [data-testid=message-content]');
        if (n) window.__growth.add(n.textContent.length); })
      .observe(document.querySelector('[data-testid=chat-log]'),
               {subtree: true, childList: true, characterData: true}); }""")
    with page.expect_response(re.compile(r"/v1/chat/completions$")) as answered:
        page.press("#chat-input", "Enter")  # the keyboard sends
    assert answered.value.headers["content-type"].startswith("text/event-stream")
    answer = page.get_by_test_id("message-assistant").last.get_by_test_id("message-content")
    expect(answer).to_contain_text("Berlin", timeout=60_000)
    stats = page.get_by_test_id("answer-stats").last
    expect(stats).to_contain_text("completion tokens")
    expect(stats).to_contain_text("tokens/s")
    assert page.evaluate("window.__growth.size") >= 3  # seen at several lengths: streamed
    sent = json.loads(answered.value.request.post_data)
    assert sent["stream"] is True and sent["temperature"] == 0
    assert sent["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}

    # A second turn carries the first one.
    page.fill("#chat-input", "And of France?")
    with page.expect_request(re.compile(r"/v1/chat/completions$")) as second:
        page.click("#chat-send")
    expect(page.get_by_test_id("answer-stats")).to_have_count(2, timeout=60_000)
    roles = [m["role"] for m in json.loads(second.value.post_data)["messages"]]
    assert roles == ["system", "user", "assistant", "user"]
    screenshot(page, "playground-chat")
    assert watch.problems == []


def test_minilm_from_the_catalogue_to_the_embeddings_playground_and_terminated(
        page, watch: PageWatch, local_cluster, client, minilm_path):
    endpoint = local_cluster.endpoint
    page.goto(f"{endpoint}/ui/catalogue")
    page.fill("#catalogue-search", "MiniLM")
    page.select_option("#filter-type", "embedding")
    expect(page).to_have_url(re.compile(r"q=MiniLM.*type=embedding|type=embedding.*q=MiniLM"))
    screenshot(page, "catalogue")
    page.get_by_role("link", name="all-MiniLM-L6-v2", exact=True).click()
    _launch_from_family_page(page, endpoint, "embedding/all-MiniLM-L6-v2", "minilm", minilm_path)
    assert client.list_models()["minilm"]["model_type"] == "embedding"

    page.get_by_role("link", name="Details").click()
    expect(page).to_have_url(re.compile(r"/ui/models/minilm$"))
    expect(page.get_by_test_id("replicas")).to_contain_text("minilm-0")
    expect(page.locator("pre.json")).to_contain_text(minilm_path)  # the launch options used
    # Scale up, then down again, while it serves.
    page.get_by_role("button", name="Add a replica").click()
    expect(page.get_by_test_id("replicas")).to_contain_text("minilm-1", timeout=LAUNCH_TIMEOUT_MS)
    assert len(client.replicas("minilm")) == 2
    screenshot(page, "model")
    page.get_by_test_id("replicas").get_by_role("button", name="Remove").last.click()
    expect(page.get_by_test_id("replicas").locator("tbody tr")).to_have_count(1, timeout=30_000)
    assert len(client.replicas("minilm")) == 1

    page.get_by_role("link", name="Playground").click()
    page.click("#embed-run")
    expect(page.get_by_test_id("similarity-matrix")).to_be_visible()
    cell = lambda i, j: float(page.get_by_test_id(f"cell-{i}-{j}").inner_text())  # noqa: E731
    assert cell(0, 0) == pytest.approx(1.0, abs=1e-3)
    assert cell(0, 1) == cell(1, 0)
    assert cell(0, 1) > cell(0, 2) + 0.2  # the cat and the kitten, not the stock market
    expect(page.get_by_test_id("embeddings-result")).to_contain_text("384 dimensions")
    screenshot(page, "playground-embeddings")

    page.goto(f"{endpoint}/ui/models/minilm")
    page.get_by_role("button", name="Terminate").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Terminate minilm?")
    dialog.get_by_role("button", name="Terminate").click()
    expect(page).to_have_url(re.compile(r"/ui/models$"))
    assert "minilm" not in client.list_models()
    expect(page.locator("[data-uid=minilm]")).to_have_count(0)
    assert watch.problems == []


def test_a_launch_that_cannot_fit_shows_the_reason_before_anything_starts(page, watch: PageWatch,
                                                                         local_cluster, client):
    launches = []
    page.on("request", lambda r: r.method == "POST" and r.url.endswith("/v1/models")
            and launches.append(r.url))
    page.goto(f"{local_cluster.endpoint}/ui/catalogue/LLM/deepseek-v3")
    reason = page.get_by_test_id("estimate-reason")
    expect(reason).to_contain_text("deepseek-v3 needs at least")
    expect(reason).to_contain_text("GiB free")
    expect(page.get_by_test_id("estimate")).to_contain_text("Does not fit.")
    expect(page.locator("#launch-button")).to_be_disabled()
    screenshot(page, "catalogue-will-it-fit")
    assert launches == []
    assert not any(m["model_name"] == "deepseek-v3" for m in client.list_models().values())
    assert watch.problems == []


def test_register_from_pasted_json_show_and_unregister(page, local_cluster, client, minilm_path):
    endpoint = local_cluster.endpoint
    page.goto(f"{endpoint}/ui/registrations?type=embedding")
    page.get_by_label("JSON").check()
    # The API's own validation message comes back as it is.
    page.fill("#reg-json", json.dumps({"model_name": "ui-minilm", "model_uri": minilm_path}))
    page.click("#register-button")
    expect(page.get_by_role("alert")).to_contain_text("dimensions")
    family = {"model_name": "ui-minilm", "dimensions": 384, "max_tokens": 256,
              "language": ["en"], "model_uri": minilm_path}
    page.fill("#reg-json", json.dumps(family))
    page.click("#register-button")
    expect(page).to_have_url(re.compile(r"/ui/registrations/embedding/ui-minilm$"))
    expect(page.locator("pre.json")).to_contain_text('"dimensions": 384')
    assert client.get_model_registration("embedding", "ui-minilm")["dimensions"] == 384
    screenshot(page, "registration")
    page.get_by_role("button", name="Unregister").click()
    page.get_by_role("dialog").get_by_role("button", name="Unregister").click()
    expect(page).to_have_url(re.compile(r"/ui/registrations\?type=embedding$"))
    expect(page.get_by_text("No custom embedding model is registered.")).to_be_visible()


PAGES = [
    ("/ui/cluster", "cluster", "[data-testid=worker]"),
    ("/ui/catalogue", "catalogue-all", "[data-testid=family] >> nth=40"),
    ("/ui/catalogue/LLM/smollm2-instruct", "catalogue-family", "[data-testid=estimate]"),
    ("/ui/models", "models", "[data-uid=smol]"),
    ("/ui/models/smol", "model-llm", "[data-testid=replicas] >> text=smol-0"),
    ("/ui/playground/smol/completion", "playground-completion", "#completion-prompt"),
    ("/ui/registrations", "registrations", "[data-testid=register-form]"),
    ("/ui/metrics?every=1", "metrics", "[data-testid=chart-replica-memory] canvas"),
]


def test_every_page_renders_without_console_errors_or_failed_requests(page, watch: PageWatch,
                                                                      local_cluster, smol_uid):
    for path, name, ready in PAGES:
        page.goto(f"{local_cluster.endpoint}{path}")
        expect(page.locator(ready)).to_be_visible()
        if name == "metrics":  # a few samples, so that the charts have lines
            expect(page.get_by_text(re.compile(r"[3-9] sample\(s\) so far"))).to_be_visible()
        assert page.locator(".error").count() == 0, (path, page.locator(".error").all_inner_texts())
        screenshot(page, name)
        assert watch.problems == [], (path, watch.problems)


def test_a_phone_sized_screen_has_no_sideways_scrolling(browser, local_cluster, smol_uid):
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    watch = PageWatch(page)
    for path, name, ready in [("/ui/cluster", "cluster-phone", "[data-testid=worker]"),
                              ("/ui/playground/smol", "playground-phone", "#chat-input"),
                              ("/ui/catalogue/LLM/smollm2-instruct", "family-phone",
                               "[data-testid=estimate]")]:
        page.goto(f"{local_cluster.endpoint}{path}")
        expect(page.locator(ready)).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, (path, overflow)
        screenshot(page, name)
    context.close()
    assert watch.problems == []


def test_the_keyboard_reaches_the_pages_and_the_skip_link(page, watch: PageWatch, local_cluster):
    page.goto(f"{local_cluster.endpoint}/ui/cluster")
    expect(page.get_by_test_id("worker")).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.keyboard.press("Shift+Tab")  # back into the header
    for _ in range(12):
        if page.evaluate("document.activeElement.textContent") == "Catalogue":
            break
        page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.textContent") == "Catalogue"
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/ui/catalogue$"))
    expect(page.get_by_test_id("family").first).to_be_visible()
    assert watch.problems == []
