"""The web UI's Usage page (admin keys): after embeddings from two keys, the totals by key (by
name) and by model equal GET /v1/usage's, the hourly chart is drawn, the CSV download holds the
same rows, and a key without `admin` sees no Usage link."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import FleetProcess, free_port
from tests.ui.conftest import PageWatch, screenshot

ADMIN_KEY = "sk-ui-usage-admin-0123"


def _call(cluster: FleetProcess, method: str, path: str, key: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{cluster.endpoint}{path}", timeout=120,
                         headers={"Authorization": f"Bearer {key}"}, **kwargs)


@pytest.fixture(scope="module")
def used_cluster(tmp_path_factory: pytest.TempPathFactory,
                 minilm_path: str) -> Iterator[tuple[FleetProcess, dict]]:
    home = tmp_path_factory.mktemp("fleet-home")
    port = free_port()
    server = FleetProcess(["local", "-p", str(port)], home, port,
                          env={"FLEET_API_KEY": ADMIN_KEY}).wait_ready()
    try:
        launched = _call(server, "POST", "/v1/models", ADMIN_KEY, json={
            "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": "minilm",
            "model_path": minilm_path})
        assert launched.status_code == 200, launched.text
        reader = _call(server, "POST", "/v1/keys", ADMIN_KEY, json={
            "name": "search-app", "owner": "team-search",
            "permissions": ["models:list", "models:read"]}).json()
        for key, count in ((ADMIN_KEY, 2), (reader["key"], 3)):
            for i in range(count):
                answer = _call(server, "POST", "/v1/embeddings", key,
                               json={"model": "minilm", "input": f"sentence number {i}"})
                assert answer.status_code == 200
        deadline = time.monotonic() + 15
        while sum(r["requests"] for r in _totals(server)) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        yield server, reader
    finally:
        server.stop()


def _totals(cluster: FleetProcess, **params) -> list[dict]:
    return _call(cluster, "GET", "/v1/usage", ADMIN_KEY, params=params).json()["data"]


def _sign_in(page, key: str) -> None:
    page.fill("#api-key", key)
    page.get_by_role("button", name="Sign in").click()


def test_an_admin_sees_the_usage_by_key_and_model_and_downloads_it(page, used_cluster):
    cluster, reader = used_cluster
    page.goto(f"{cluster.endpoint}/ui/usage")
    _sign_in(page, ADMIN_KEY)
    watch = PageWatch(page)
    table = page.get_by_test_id("usage-totals")
    by_key = {r["key_id"]: r for r in _totals(cluster, group_by="key")}
    row = table.locator("tr", has_text="search-app")
    expect(row).to_contain_text(reader["id"])
    expect(row).to_contain_text(f"{by_key[reader['id']]['total_tokens']:,}")
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(page.get_by_test_id("chart-usage-tokens").locator("canvas")).to_have_count(1)
    screenshot(page, "usage")

    page.select_option("#usage-group", "model")
    expect(table.locator("tbody tr")).to_have_count(1)
    model_total = _totals(cluster, group_by="model")[0]["total_tokens"]
    expect(table.locator("tr", has_text="minilm")).to_contain_text(f"{model_total:,}")
    with page.expect_download() as download:
        page.get_by_test_id("usage-csv").click()
    rows = list(csv.DictReader(io.StringIO(download.value.path().read_text())))
    assert [(r["model"], int(r["total_tokens"])) for r in rows] == [("minilm", model_total)]
    assert watch.problems == []


def test_a_key_without_admin_sees_no_usage_link(page, used_cluster):
    cluster, reader = used_cluster
    page.goto(f"{cluster.endpoint}/ui/cluster")
    _sign_in(page, reader["key"])
    expect(page.get_by_role("link", name="Models")).to_be_visible()
    expect(page.get_by_role("link", name="Usage")).to_have_count(0)
