"""What a web page can make a key-less `fleet local` do, through the real server: the DNS
rebinding launch (a page whose name now resolves to 127.0.0.1 asks for a launch that runs the
model folder's Python with its own environment) is refused, so are cross-site POSTs and bodies
that do not say they are JSON; the same launch from the machine itself still works. A cluster
started with --allowed-host and --cors-origin serves those names and origins."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FleetProcess, free_port

# The folder's own Python: it runs when a launch trusts remote code (sentence-transformers
# imports the modules that modules.json names from the model's folder), and leaves a mark.
PAYLOAD = """import os
with open(os.environ["FLEET_PWNED"], "w") as mark:
    mark.write("ran")
"""


@pytest.fixture(scope="module")
def remote_code_folder(tmp_path_factory, minilm_path: str) -> Path:
    """MiniLM's folder with a module of its own named in modules.json."""
    folder = tmp_path_factory.mktemp("remote-code") / "minilm"
    shutil.copytree(minilm_path, folder)
    (folder / "pwn.py").write_text(PAYLOAD + "class Pwn:\n    pass\n")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": "pwn", "path": "", "type": "pwn.Pwn"})
    (folder / "modules.json").write_text(json.dumps(modules))
    return folder


def _launch_body(folder: Path, marker: Path, uid: str) -> dict:
    return {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": uid,
            "model_path": str(folder), "trust_remote_code": True,
            "envs": {"FLEET_PWNED": str(marker)}}


def test_the_rebinding_launch_is_refused(local_cluster: FleetProcess, remote_code_folder, tmp_path):
    marker = tmp_path / "pwned"
    port = local_cluster.port
    body = _launch_body(remote_code_folder, marker, "rebound")
    attacker = {"Host": f"attacker.example:{port}", "Origin": f"http://attacker.example:{port}"}
    response = httpx.post(f"{local_cluster.endpoint}/v1/models", headers=attacker, timeout=60,
                          json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "host_not_allowed"
    # As a "simple" request, which a browser sends cross-site without asking first:
    simple = httpx.post(f"{local_cluster.endpoint}/v1/models", timeout=60, content=json.dumps(body),
                        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert simple.status_code == 403, simple.text
    # Nor without an Origin (a client that is not a browser, mistyped): not JSON, not read.
    untyped = httpx.post(f"{local_cluster.endpoint}/v1/models", timeout=60,
                         content=json.dumps(body), headers={"Content-Type": "text/plain"})
    assert untyped.status_code == 415, untyped.text
    assert untyped.json()["error"]["code"] == "unsupported_media_type"
    time.sleep(1.0)  # what a launch would have run had time to run
    assert httpx.get(f"{local_cluster.endpoint}/v1/models").json()["data"] == []
    assert not marker.exists()


def test_the_same_launch_from_this_machine_runs_the_folders_code(local_cluster: FleetProcess,
                                                                 remote_code_folder, tmp_path):
    """On loopback the launch policy allows remote code and envs (the caller is on the machine):
    the launch refused above would have run the folder's Python."""
    marker = tmp_path / "ran"
    httpx.post(f"{local_cluster.endpoint}/v1/models", timeout=120,
               json=_launch_body(remote_code_folder, marker, "from-here"))
    try:
        assert marker.read_text() == "ran"
    finally:
        httpx.delete(f"{local_cluster.endpoint}/v1/models/from-here", timeout=60)


def test_cross_site_posts_to_the_fast_routes_are_refused(local_cluster: FleetProcess):
    for headers, status in (({"Content-Type": "text/plain", "Origin": "http://evil.example"}, 403),
                            ({"Content-Type": "text/plain"}, 415),
                            ({"Content-Type": "application/json",
                              "Origin": "http://evil.example"}, 403)):
        response = httpx.post(f"{local_cluster.endpoint}/v1/embeddings", headers=headers,
                              content=b'{"model": "m", "input": "x"}', timeout=60)
        assert response.status_code == status, response.text
    # Its own page (the web UI), same origin: the route answers (no such model, 404).
    own = httpx.post(f"{local_cluster.endpoint}/v1/embeddings", json={"model": "m", "input": "x"},
                     headers={"Origin": local_cluster.endpoint}, timeout=60)
    assert own.status_code == 404, own.text


@pytest.fixture(scope="module")
def named_cluster(tmp_path_factory) -> Iterator[FleetProcess]:
    port = free_port()
    server = FleetProcess(["local", "-p", str(port), "--allowed-host", "fleet.internal",
                           "--cors-origin", "https://app.example"],
                          tmp_path_factory.mktemp("named-home"), port).wait_ready()
    yield server
    server.stop()


def test_allowed_hosts_and_cors_origins_are_served(named_cluster: FleetProcess):
    endpoint = named_cluster.endpoint
    internal = {"Host": f"fleet.internal:{named_cluster.port}"}
    assert httpx.get(f"{endpoint}/v1/models", headers=internal).status_code == 200
    assert httpx.get(f"{endpoint}/v1/models",
                     headers={"Host": "other.internal"}).status_code == 400
    preflight = httpx.options(f"{endpoint}/v1/embeddings", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    # The allowed page's POST reaches the route (no model: 404), another page's does not.
    allowed = httpx.post(f"{endpoint}/v1/embeddings", json={"model": "none", "input": "x"},
                         headers={"Origin": "https://app.example"})
    assert allowed.status_code == 404
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    refused = httpx.post(f"{endpoint}/v1/embeddings", json={"model": "none", "input": "x"},
                         headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403
