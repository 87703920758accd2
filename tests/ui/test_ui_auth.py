"""The web UI on a cluster with API keys: the UI's files are served to anyone (they hold no
data) while every data call needs the key; the key prompt, a wrong key refused, a read-only
key that is shown no launch button (nor the metrics it may not read), an admin key that is,
and the key kept in the tab's sessionStorage only."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import FleetProcess, free_port
from tests.ui.conftest import PageWatch, screenshot

ADMIN_KEY = "sk-ui-admin-key-0123"
READ_ONLY_KEY = "sk-ui-read-only-key-0123"


@pytest.fixture(scope="module")
def keyed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    home = tmp_path_factory.mktemp("fleet-home")
    auth_file = home.parent / "auth.json"
    auth_file.write_text(json.dumps({"user_config": [
        {"username": "reader", "permissions": ["models:list", "models:read"],
         "api_keys": [READ_ONLY_KEY]}]}))
    port = free_port()
    server = FleetProcess(["local", "-p", str(port), "--auth-config", str(auth_file)], home,
                          port, env={"FLEET_API_KEY": ADMIN_KEY}).wait_ready()
    yield server
    server.stop()


def _sign_in(page, key: str) -> None:
    page.fill("#api-key", key)
    page.get_by_role("button", name="Sign in").click()


def test_the_files_need_no_key_and_the_data_does(keyed_cluster):
    endpoint = keyed_cluster.endpoint
    root = httpx.get(f"{endpoint}/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = httpx.get(f"{endpoint}/ui/models/some-model")
    assert page.status_code == 200 and "<div id=\"app\">" in page.text
    assert httpx.get(f"{endpoint}/ui/js/main.js").status_code == 200
    assert httpx.get(f"{endpoint}/v1/cluster/overview").status_code == 401
    assert httpx.get(f"{endpoint}/v1/auth/me").status_code == 401
    me = httpx.get(f"{endpoint}/v1/auth/me", headers={"Authorization": f"Bearer {READ_ONLY_KEY}"})
    assert me.json() == {"auth": True, "holder": "reader",
                         "permissions": ["models:list", "models:read"], "models": None}


def test_the_key_prompt_refuses_a_wrong_key(page, keyed_cluster):
    watch = PageWatch(page)
    page.goto(f"{keyed_cluster.endpoint}/ui/cluster")
    expect(page.locator("#api-key")).to_be_focused()
    assert watch.problems == []  # asking whether keys are on needs none
    screenshot(page, "sign-in")
    _sign_in(page, "sk-not-a-key-of-this-cluster")
    expect(page.get_by_role("alert")).to_contain_text("This key was refused: invalid API key")
    expect(page.locator("#api-key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


def test_a_read_only_key_sees_no_launch_button(page, keyed_cluster):
    endpoint = keyed_cluster.endpoint
    page.goto(f"{endpoint}/ui/cluster")
    _sign_in(page, READ_ONLY_KEY)
    watch = PageWatch(page)
    expect(page.get_by_role("heading", name="Cluster")).to_be_visible()
    expect(page.get_by_text("may not see the workers' resources")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Catalogue")).to_be_visible()
    expect(nav.get_by_role("link", name="Metrics")).to_have_count(0)  # needs metrics:read
    # Kept for this tab only.
    assert page.evaluate("sessionStorage.getItem('fleet.apiKey')") == READ_ONLY_KEY
    assert page.evaluate("localStorage.length") == 0

    page.goto(f"{endpoint}/ui/catalogue/embedding/all-MiniLM-L6-v2")  # a reload keeps the key
    expect(page.get_by_test_id("engine-matrix")).to_be_visible()
    expect(page.get_by_text("This API key may not launch models")).to_be_visible()
    expect(page.locator("#launch-button")).to_have_count(0)
    page.goto(f"{endpoint}/ui/models")
    expect(page.get_by_role("heading", name="Models")).to_be_visible()
    expect(page.get_by_role("link", name="Launch a model")).to_have_count(0)
    page.goto(f"{endpoint}/ui/registrations")
    expect(page.get_by_text("No custom LLM model is registered.")).to_be_visible()
    expect(page.get_by_test_id("register-form")).to_have_count(0)
    screenshot(page, "read-only-key")
    assert watch.problems == []


def test_an_admin_key_launches_and_signs_out(page, keyed_cluster):
    page.goto(f"{keyed_cluster.endpoint}/ui/catalogue/embedding/all-MiniLM-L6-v2")
    _sign_in(page, ADMIN_KEY)
    expect(page.locator("#launch-button")).to_be_visible()
    expect(page.get_by_test_id("estimate")).to_contain_text("Fits.")
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Metrics")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#api-key")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    expect(page).to_have_url(re.compile(r"/ui/catalogue/embedding/all-MiniLM-L6-v2$"))


def test_a_read_only_key_sees_a_models_autoscaling_and_events_but_no_form(page, keyed_cluster,
                                                                          minilm_path):
    endpoint = keyed_cluster.endpoint
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    launched = httpx.post(f"{endpoint}/v1/models", headers=admin, timeout=120, json={
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": "guarded",
        "model_path": minilm_path, "min_replicas": 1, "max_replicas": 2})
    assert launched.status_code == 200, launched.text
    try:
        page.goto(f"{endpoint}/ui/models/guarded")
        _sign_in(page, READ_ONLY_KEY)
        watch = PageWatch(page)
        expect(page.get_by_test_id("autoscale-settings")).to_contain_text("1 and 2")
        expect(page.get_by_text("Nothing yet")).to_be_visible()  # the events, which it may list
        expect(page.get_by_test_id("autoscale-form")).to_have_count(0)  # needs models:start
        # The route refuses it anyway: hiding the form is a courtesy.
        refused = httpx.post(f"{endpoint}/v1/models/guarded/autoscale", json={"max_replicas": 3},
                             headers={"Authorization": f"Bearer {READ_ONLY_KEY}"}, timeout=30)
        assert refused.status_code == 403, refused.text
        assert watch.problems == []

        page.get_by_role("button", name="Sign out").click()
        _sign_in(page, ADMIN_KEY)
        page.fill("#autoscale-max_replicas", "3")
        page.click("#autoscale-save")  # sent with the tab's key
        expect(page.get_by_role("status").filter(has_text="Saved.")).to_be_visible()
        described = httpx.get(f"{endpoint}/v1/models/guarded", headers=admin, timeout=30).json()
        assert described["autoscale"]["max_replicas"] == 3
    finally:
        httpx.delete(f"{endpoint}/v1/models/guarded", headers=admin, timeout=60)
