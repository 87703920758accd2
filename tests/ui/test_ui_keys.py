"""The web UI's Keys page, for admin keys only: every key listed (those of --api-key and
--auth-config read-only, no Revoke), a key made from the form shown once and working at once,
revoked from the page and refused within a second, and the audit log below; a key without
`admin` sees no Keys link."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import FleetProcess, free_port
from tests.ui.conftest import PageWatch, screenshot

ADMIN_KEY = "sk-ui-keys-admin-0123"
READER_KEY = "sk-ui-keys-reader-0123"


@pytest.fixture(scope="module")
def keyed_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    home = tmp_path_factory.mktemp("fleet-home")
    auth_file = home.parent / "auth.json"
    auth_file.write_text(json.dumps({"user_config": [
        {"username": "reader", "permissions": ["models:list"], "api_keys": [READER_KEY]}]}))
    port = free_port()
    server = FleetProcess(["local", "-p", str(port), "--auth-config", str(auth_file)], home,
                          port, env={"FLEET_API_KEY": ADMIN_KEY}).wait_ready()
    yield server
    server.stop()


def _sign_in(page, key: str) -> None:
    page.fill("#api-key", key)
    page.get_by_role("button", name="Sign in").click()


def _models(cluster: FleetProcess, key: str) -> int:
    return httpx.get(f"{cluster.endpoint}/v1/models", timeout=30,
                     headers={"Authorization": f"Bearer {key}"}).status_code


def test_an_admin_makes_and_revokes_a_key_from_the_page(page, keyed_cluster):
    page.goto(f"{keyed_cluster.endpoint}/ui/keys")
    _sign_in(page, ADMIN_KEY)
    watch = PageWatch(page)
    table = page.get_by_test_id("keys")
    expect(table).to_contain_text("admin key")
    expect(table).to_contain_text("reader")
    expect(table.get_by_text("read-only")).to_have_count(2)
    expect(table.get_by_role("button", name="Revoke")).to_have_count(0)

    page.fill("#key-name", "from-the-ui")
    page.fill("#key-requests_per_minute", "12")
    page.click("#create-key-button")
    shown = page.get_by_test_id("new-key")
    expect(shown).to_contain_text("sk-fleet-")
    key = shown.locator("pre").inner_text().strip()
    assert _models(keyed_cluster, key) == 200  # works at once
    expect(table).to_contain_text("from-the-ui")
    expect(table).to_contain_text("requests_per_minute: 12")
    expect(page.get_by_test_id("audit")).to_contain_text("key.create")
    screenshot(page, "keys")

    table.get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke").click()
    expect(table).to_contain_text("revoked")
    started = time.monotonic()
    while _models(keyed_cluster, key) != 401:
        assert time.monotonic() - started < 1.0
        time.sleep(0.05)
    assert watch.problems == []


def test_a_key_without_admin_sees_no_keys_link(page, keyed_cluster):
    page.goto(f"{keyed_cluster.endpoint}/ui/cluster")
    _sign_in(page, READER_KEY)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Models")).to_be_visible()
    expect(nav.get_by_role("link", name="Keys")).to_have_count(0)
