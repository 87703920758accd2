"""Models that come and go with demand, in the web UI against a real `fleet local` and real
MiniLM replicas: autoscaling changed from the model's page (the API then reports it, and the
supervisor scales to the new floor, which the page's events list with the reason); a bad value
refused with the API's message; the launch form's keep_alive and bounds; an idle model shown as
idle in the list, with its unload and its load on demand in the events, newest first."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from tests.ui.conftest import PageWatch, screenshot

LAUNCH_TIMEOUT_MS = 120_000


def _only_refusals_of(watch: PageWatch, route: str) -> list[str]:
    """The page's problems less the 400s the test asked for (the browser logs each refused
    request as a console error too)."""
    return [p for p in watch.problems if not ("400" in p and (route in p or p.startswith("console:")))]


def test_autoscaling_changed_from_the_model_page_and_its_scale_up_listed_with_the_reason(
        page, watch: PageWatch, local_cluster, client, minilm_path):
    uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="elastic-ui",
                              model_path=minilm_path)
    page.goto(f"{local_cluster.endpoint}/ui/models/{uid}")
    settings = page.get_by_test_id("autoscale-settings")
    expect(settings).to_contain_text("off: the replicas it was given")
    expect(settings).to_contain_text("never (the cluster's default)")  # its keep_alive
    expect(page.get_by_text("Nothing yet")).to_be_visible()  # no event so far

    page.fill("#autoscale-min_replicas", "2")
    page.fill("#autoscale-max_replicas", "3")
    page.fill("#autoscale-target_inflight", "4")
    page.fill("#autoscale-scale_up_delay", "1.5")
    page.click("#autoscale-save")
    expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
    assert client.describe_model(uid)["autoscale"] == {
        "min_replicas": 2, "max_replicas": 3, "target_inflight": 4.0, "scale_up_delay": 1.5,
        "scale_down_delay": 60.0}
    expect(settings).to_contain_text("2 and 3")
    expect(settings).to_contain_text("4 per replica")
    expect(page.locator("#autoscale-min_replicas")).to_have_value("2")  # the settings in force

    # Below its new floor: the supervisor adds a replica on its own, and says why.
    events = page.get_by_test_id("model-events")
    expect(events.locator("tbody tr")).to_have_count(1, timeout=LAUNCH_TIMEOUT_MS)
    row = events.locator("tbody tr").first
    expect(row).to_contain_text("Scaled up")
    expect(row).to_contain_text("↑ up")
    expect(row).to_contain_text("1 → 2")
    expect(row).to_contain_text("1 replica(s), below min_replicas 2")
    assert [(e["kind"], e["from"], e["to"]) for e in client.model_events(uid)] == [("scale_up", 1, 2)]
    expect(page.get_by_test_id("replicas")).to_contain_text(f"{uid}-1")
    expect(settings).to_contain_text("2 ready of 2, 2 wanted")
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header at the top of the picture
    screenshot(page, "model-autoscale")

    # Bounds that do not fit together: the API's own message, and nothing changed.
    page.fill("#autoscale-min_replicas", "4")
    page.click("#autoscale-save")
    expect(page.get_by_role("alert")).to_contain_text(
        "Not changed: min_replicas (4) must not exceed max_replicas (3)")
    assert client.describe_model(uid)["autoscale"]["min_replicas"] == 2
    assert _only_refusals_of(watch, "/autoscale") == [], watch.problems
    client.terminate_model(uid)


def test_launched_with_a_keep_alive_listed_idle_then_woken_with_both_events(
        page, watch: PageWatch, local_cluster, client, minilm_path):
    endpoint = local_cluster.endpoint
    page.goto(f"{endpoint}/ui/catalogue/embedding/all-MiniLM-L6-v2")
    page.fill("#launch-uid", "napper")
    page.fill("#launch-path", minilm_path)
    page.get_by_text("Keep alive and autoscaling").click()
    page.fill("#launch-keep_alive", "3s")
    page.fill("#launch-min_replicas", "1")
    page.fill("#launch-max_replicas", "2")
    page.fill("#launch-target_inflight", "6")
    expect(page.get_by_test_id("estimate")).to_contain_text("Fits.")
    with page.expect_request(re.compile(r"/v1/models\?wait_ready=false$")) as sent:
        page.click("#launch-button")
    body = sent.value.post_data_json
    assert (body["keep_alive"], body["min_replicas"], body["max_replicas"],
            body["target_inflight"]) == ("3s", 1, 2, 6)
    expect(page.get_by_test_id("launch-ready")).to_be_visible(timeout=LAUNCH_TIMEOUT_MS)
    described = client.describe_model("napper")
    assert described["launch_options"]["keep_alive"] == "3s"
    assert described["keep_alive_s"] == 3.0
    assert described["autoscale"] == {"min_replicas": 1, "max_replicas": 2, "target_inflight": 6.0,
                                      "scale_up_delay": 5.0, "scale_down_delay": 60.0}

    # Three seconds without a request: unloaded, and listed as idle.
    page.goto(f"{endpoint}/ui/models")
    row = page.locator("[data-uid=napper]")
    expect(row.locator(".badge")).to_have_text("idle", timeout=30_000)
    expect(row.locator(".badge")).to_have_class(re.compile(r"\bstate-idle\b"))
    expect(row).to_contain_text("its next request loads it")
    screenshot(page, "models-idle")

    page.goto(f"{endpoint}/ui/models/napper")
    expect(page.get_by_test_id("autoscale-settings")).to_contain_text("3.0 s")
    expect(page.get_by_text("Idle: no replica is loaded")).to_be_visible()
    events = page.get_by_test_id("model-events")
    expect(events.locator("tbody tr").first).to_contain_text("Unloaded (idle)")
    expect(events.locator("tbody tr").first).to_contain_text("no request for 3s")

    # A request wakes it; the page's poll lists the load above the unload before it (newest
    # first; its keep_alive may unload it again meanwhile, listed above both).
    answered = httpx.post(f"{endpoint}/v1/embeddings", json={"model": "napper", "input": "hi"},
                          timeout=120)
    assert answered.status_code == 200, answered.text
    woken = events.locator("tbody tr[data-kind=load]")
    expect(woken).to_have_count(1, timeout=15_000)
    expect(woken).to_contain_text("Loaded (woken)")
    expect(woken).to_contain_text("↑ up")
    expect(woken).to_contain_text("a request arrived")
    expect(woken).to_contain_text("0 → 1")
    expect(events.locator("tbody tr[data-kind=load] + tr")).to_have_attribute("data-kind", "unload")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "model-events")
    assert watch.problems == []
    client.terminate_model("napper")
