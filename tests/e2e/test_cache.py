"""The weights cache through a real `fleet local`: listed with its size on disk and files through
REST, Fleet's client, the CLI and xinference-client; a model launched by name (no path, hub
offline) loads from it and marks it in use; removal is refused while it runs and works after;
hostile model_version values are refused and delete nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleet.cli.cache_cmds import human_bytes
from fleet.client import Client, FleetClientError
from tests.cache_builders import MINILM, fake_download, model_file_count, tree_bytes
from tests.conftest import FleetProcess, start_local


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetProcess]:
    server = start_local(tmp_path_factory.mktemp("fleet-home"), env={"HF_HUB_OFFLINE": "1"})
    yield server
    server.stop()


@pytest.fixture
def cached(cluster: FleetProcess, minilm_path: str) -> Path:
    """MiniLM in the cluster's cache, put back if an earlier test removed it."""
    target = cluster.home / "cache" / f"{MINILM}-pytorch"
    return target if target.exists() else fake_download(cluster.home, minilm_path)


def fleet_cli(cluster: FleetProcess, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args, "-e", cluster.endpoint],
                          capture_output=True, text=True, input=stdin, timeout=60)


def test_listed_with_size_and_files_through_rest_client_and_cli(cluster, cached, minilm_path):
    expected = {"model_version": cached.name, "model_name": MINILM, "model_type": "embedding",
                "model_format": "pytorch", "quantization": "none", "path": str(cached),
                "size_bytes": tree_bytes(cached), "file_count": model_file_count(minilm_path),
                "in_use_by": [], "complete": True}

    reply = httpx.get(f"{cluster.endpoint}/v1/cache/models", timeout=30)
    assert reply.status_code == 200, reply.text
    [entry] = reply.json()["list"]
    assert {k: entry[k] for k in expected} == expected
    assert entry["actor_ip_address"].startswith("127.0.0.1:")

    assert Client(cluster.endpoint).list_cached_models() == [entry]
    assert Client(cluster.endpoint).list_cached_models(model_name="nothing-like-it") == []

    as_json = fleet_cli(cluster, "cached", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [entry]
    table = fleet_cli(cluster, "cached")
    assert table.returncode == 0, table.stderr
    assert cached.name in table.stdout and human_bytes(tree_bytes(cached)) in table.stdout

    from xinference_client import RESTfulClient

    xinference = RESTfulClient(cluster.endpoint)
    assert [e["model_version"] for e in xinference.list_cached_models()] == [cached.name]
    assert xinference.list_deletable_models(cached.name)["paths"] == [str(cached)]
    assert xinference.list_deletable_models("not-cached-here")["paths"] == []


@pytest.mark.parametrize("hostile", ["../x", "/etc", "..", "a/../../x"])
def test_hostile_model_versions_are_refused_and_delete_nothing(cluster, cached, hostile):
    sentinel = cluster.home / "x"  # where `../x` would lead from the cache
    sentinel.mkdir(exist_ok=True)
    (sentinel / "keep.txt").write_text("keep")
    for method, path in (("DELETE", "/v1/cache/models"), ("GET", "/v1/cache/models/files")):
        reply = httpx.request(method, f"{cluster.endpoint}{path}", timeout=30,
                              params={"model_version": hostile, "force": "true"})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_model_version"
    removed = fleet_cli(cluster, "remove-cache", "--model_version", hostile, "-y", "--force")
    assert removed.returncode == 1 and "invalid model_version" in removed.stderr
    assert (sentinel / "keep.txt").read_text() == "keep"
    assert (cached / "model.safetensors").is_file()


def test_unknown_model_version_is_404(cluster, cached):
    reply = httpx.delete(f"{cluster.endpoint}/v1/cache/models", params={"model_version": "nope"},
                         timeout=30)
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "cache_not_found"
    with pytest.raises(FleetClientError) as caught:
        Client(cluster.endpoint).remove_cached_model("nope", worker_ip="10.255.255.1")
    assert caught.value.status_code == 400 and "no worker at" in caught.value.message


def test_in_use_while_running_then_removed_through_cli_client_and_xinference(
        cluster, cached, minilm_path):
    client = Client(cluster.endpoint)
    # No model path: launched by name, the hub offline, it can only load from the cache.
    uid = client.launch_model(MINILM, model_type="embedding", model_uid="cached-minilm")
    try:
        [entry] = client.list_cached_models()
        assert entry["in_use_by"] == [uid]
        refused = httpx.delete(f"{cluster.endpoint}/v1/cache/models",
                               params={"model_version": cached.name}, timeout=30)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "cache_in_use" and uid in refused.text
        with pytest.raises(FleetClientError) as caught:
            client.remove_cached_model(cached.name)
        assert caught.value.status_code == 409
        by_cli = fleet_cli(cluster, "remove-cache", "--model-version", cached.name, "-y")
        assert by_cli.returncode == 1 and "in use by cached-minilm" in by_cli.stderr
        asking = fleet_cli(cluster, "remove-cache", "--model_version", cached.name)
        assert asking.returncode == 1 and "--force" in asking.stderr
        # Refused means untouched: the model still serves from those files.
        assert (cached / "model.safetensors").is_file()
        vector = client.get_model(uid).create_embedding("still serving")["data"][0]["embedding"]
        assert len(vector) == 384
    finally:
        client.terminate_model(uid)

    assert client.list_cached_models()[0]["in_use_by"] == []
    by_cli = fleet_cli(cluster, "remove-cache", "--model_version", cached.name, stdin="y\n")
    assert by_cli.returncode == 0, by_cli.stderr
    assert str(cached) in by_cli.stdout and "Removed" in by_cli.stdout
    assert not cached.exists() and client.list_cached_models() == []
    assert (cluster.home / "cache").is_dir() and list((cluster.home / "cache").iterdir()) == []

    fake_download(cluster.home, minilm_path)
    removed = client.remove_cached_model(cached.name)
    assert removed["result"] is True and removed["removed"][0]["path"] == str(cached)
    assert not cached.exists() and client.list_cached_models() == []

    from xinference_client import RESTfulClient

    fake_download(cluster.home, minilm_path)
    assert RESTfulClient(cluster.endpoint).confirm_and_remove_model(cached.name) is True
    assert not cached.exists() and httpx.get(f"{cluster.endpoint}/v1/cache/models").json()["list"] == []
