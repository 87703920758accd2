"""Nothing a user would be upset to lose is lost when `fleet local` restarts."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx

from fleet.client import Client
from tests.conftest import start_local
from tests.state_db import save_model_entry, saved_models

CUSTOM = {
    "model_name": "my-minilm",
    "dimensions": 384,
    "max_tokens": 256,
    "language": ["en"],
    "model_id": "sentence-transformers/all-MiniLM-L6-v2",
}


def test_registration_and_launched_model_survive_a_restart(fleet_home, minilm_path, tmp_path):
    family_file = tmp_path / "my-minilm.json"
    family_file.write_text(json.dumps({**CUSTOM, "model_uri": f"file://{minilm_path}"}))
    first = start_local(fleet_home)
    try:
        registered = subprocess.run(
            [sys.executable, "-m", "fleet", "register", "-t", "embedding", "--file",
             str(family_file), "-e", first.endpoint], capture_output=True, text=True, timeout=60)
        assert registered.returncode == 0, registered.stderr
        client = Client(first.endpoint)
        # model_uri in the registration: no --model-path needed.
        client.launch_model("my-minilm", model_type="embedding")
        before = client.get_model("my-minilm").create_embedding("persist me")["data"][0]
        client.set_aliases("my-minilm", ["text-embedding-3-small"])  # kept with the model
    finally:
        assert first.stop() == 0, first.output()

    second = start_local(fleet_home)
    try:
        client = Client(second.endpoint)
        names = {r["model_name"]: r for r in client.list_model_registrations("embedding")}
        assert names["my-minilm"]["is_builtin"] is False
        # The launched model comes back by itself.
        assert "my-minilm" in client.list_models()
        client.launch_progress("my-minilm")
        deadline_state = _wait_ready(client, "my-minilm")
        assert deadline_state == "ready"
        after = client.get_model("my-minilm").create_embedding("persist me")["data"][0]
        assert after["embedding"] == before["embedding"]
        by_alias = httpx.post(f"{second.endpoint}/v1/embeddings", timeout=60, json={
            "model": "text-embedding-3-small", "input": "persist me"}).json()["data"][0]
        assert by_alias["embedding"] == before["embedding"]
        client.terminate_model("my-minilm")
        client.unregister_model("embedding", "my-minilm")
    finally:
        second.stop()

    third = start_local(fleet_home)
    try:
        client = Client(third.endpoint)
        assert client.list_models() == {}
        names = [r["model_name"] for r in client.list_model_registrations("embedding")]
        assert "my-minilm" not in names
    finally:
        third.stop()


def test_a_restored_model_that_no_longer_fits_is_tried_and_kept(fleet_home):
    huge = {"model_name": "huge-llm", "model_ability": ["chat"], "context_length": 4096,
            "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 500,
                             "model_id": "example/huge-llm"}]}
    first = start_local(fleet_home)
    try:
        Client(first.endpoint).register_model("LLM", huge, persist=True)
    finally:
        assert first.stop() == 0, first.output()
    # As a previous run would have left it: launched when it fitted (or with the check skipped).
    save_model_entry(fleet_home, "huge", {"model_name": "huge-llm", "model_type": "LLM",
                                          "model_uid": "huge"})
    second = start_local(fleet_home)
    try:
        client = Client(second.endpoint)
        assert _wait_ready(client, "huge", timeout=60) == "failed"
        # Tried (its weights cannot be downloaded here), not dropped for its estimate.
        error = client.describe_model("huge")["error"]
        assert error.startswith("cannot download example/huge-llm"), error
        kept = saved_models(fleet_home)
        assert kept == {"huge": {"model_name": "huge-llm", "model_type": "LLM", "model_uid": "huge"}}
    finally:
        second.stop()


def _wait_ready(client: Client, uid: str, timeout: float = 120.0) -> str:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.launch_progress(uid)["status"]
        if state in ("ready", "failed"):
            return state
        time.sleep(0.2)
    return "timeout"
