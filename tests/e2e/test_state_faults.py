"""The saved state misbehaves, the cluster does not: a corrupt state file of Fleet 0.1 is kept in
the backup and the cluster starts; malformed or unknown entries are kept while the good ones
come back; a write that fails (a database on a full disk) changes nothing and says so."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from fleet.client import Client
from tests.concurrency import wait_for
from tests.conftest import FleetProcess, start_local
from tests.state_db import saved_models


def _write_state(fleet_home: Path, text: str) -> Path:
    """The state file a run of Fleet 0.1 left behind, as `text` (imported at the first start)."""
    state = fleet_home / "state" / "models.json"
    state.parent.mkdir(parents=True)
    state.write_text(text)
    return state


def _minilm(uid: str, path: str) -> dict:
    return {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": uid,
            "model_path": path}


def _log(server: FleetProcess) -> str:
    return (server.home / "logs" / "local.log").read_text(errors="replace")


def test_a_corrupt_state_file_is_kept_aside_and_the_cluster_starts(fleet_home, minilm_path):
    state = _write_state(fleet_home, '{"minilm": {"model_name": "all-Mini')  # cut short
    server = start_local(fleet_home)
    try:
        client = Client(server.endpoint)
        assert client.list_models() == {}
        aside = list(fleet_home.glob("state.imported-*/models.json"))
        assert len(aside) == 1 and aside[0].read_text().startswith('{"minilm"')
        assert f"the state file {state} is corrupt" in _log(server)
        # The cluster works, and keeps its state again.
        client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="fresh",
                            model_path=minilm_path)
        assert list(saved_models(fleet_home)) == ["fresh"]
    finally:
        server.stop()


def test_malformed_and_unknown_entries_are_kept_and_the_rest_restored(fleet_home, minilm_path):
    # Each bad entry fails alone: none of them stops the restore pass before "good".
    entries = {"broken": [1, 2], "ghost": {"model_name": "no-such-model"},
               "odd": {**_minilm("odd", minilm_path), "model_type": "nonsense"},
               "good": _minilm("good", minilm_path)}
    _write_state(fleet_home, json.dumps(entries))
    server = start_local(fleet_home)
    try:
        client = Client(server.endpoint)
        wait_for(lambda: client.list_models().get("good", {}).get("status") == "ready", 120)
        assert client.get_model("good").create_embedding("back")["data"]
        assert set(client.list_models()) == {"good"}
        assert saved_models(fleet_home) == entries  # nothing dropped
        log = _log(server)
        assert "entry 'broken' cannot be restored" in log
        assert "model ghost of the last run cannot be shown" in log
        assert "unknown model type 'nonsense'" in log
    finally:
        server.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a small filesystem of its own, for the state's database, which a test can
    fill (root ignores file modes and quotas, not a full disk). An open database cannot be
    remounted read-only: the kernel refuses while files are open for writing."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a filesystem of its own needs root")
    folder = tmp_path / "state-db"
    folder.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder: Path) -> Path:
    """The disk of `folder` full, by one file: remove it to make room again."""
    filler = folder / "filler"
    # Unbuffered: a write that the full disk cut short leaves nothing behind for the close to
    # flush (and fail on), whatever the free space was when it began.
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def test_a_state_write_that_fails_changes_nothing(fleet_home, minilm_path, small_disk):
    database = f"sqlite:///{small_disk / 'fleet.db'}"
    server = start_local(fleet_home, env={"FLEET_DATABASE_URL": database})
    try:
        client = Client(server.endpoint)
        client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="kept",
                            model_path=minilm_path)
        filler = _fill(small_disk)
        launch = httpx.post(f"{server.endpoint}/v1/models", timeout=60,
                            json=_minilm("refused", minilm_path))
        assert launch.status_code == 500, launch.text
        error = launch.json()["error"]
        assert error["code"] == "state_not_saved" and "nothing was changed" in error["message"]
        assert set(client.list_models()) == {"kept"}
        # No process was started for it.
        replicas = [r for w in client.list_workers() for r in w["replicas"]]
        assert replicas == ["kept-0"]
        stop = httpx.delete(f"{server.endpoint}/v1/models/kept", timeout=60)
        assert stop.status_code == 500 and stop.json()["error"]["code"] == "state_not_saved"
        assert client.list_models()["kept"]["status"] == "ready"
        assert client.get_model("kept").create_embedding("still here")["data"]
        filler.unlink()
        client.terminate_model("kept")
        assert client.list_models() == {}
        assert saved_models(database) == {}
    finally:
        server.stop()


def _max_latency_while(endpoint: str, done: threading.Event) -> list[float]:
    """Every 0.2 s until `done`: how long /status and /v1/models took (5 s for no answer)."""
    seen: list[float] = []
    while not done.is_set():
        for path in ("/status", "/v1/models"):
            started = time.monotonic()
            try:
                answered = httpx.get(f"{endpoint}{path}", timeout=5).status_code == 200
            except httpx.HTTPError:
                answered = False
            seen.append(time.monotonic() - started if answered else 5.0)
        time.sleep(0.2)
    return seen


def test_an_entry_past_the_launch_limits_fails_alone_and_the_api_keeps_answering(
        fleet_home, minilm_path):
    # Hand-edited (or written by an older version): a launch would refuse it (replica <= 64).
    entries = {"many": {**_minilm("many", minilm_path), "replica": 100000},
               "good": _minilm("good", minilm_path)}
    _write_state(fleet_home, json.dumps(entries))
    server = start_local(fleet_home)
    done = threading.Event()
    try:
        with ThreadPoolExecutor(1) as pool:
            watching = pool.submit(_max_latency_while, server.endpoint, done)
            client = Client(server.endpoint)
            try:
                wait_for(lambda: client.list_models().get("good", {}).get("status") == "ready", 120)
            finally:
                done.set()
            latencies = watching.result()
        assert latencies and max(latencies) < 2.0, sorted(latencies)[-5:]
        assert client.get_model("good").create_embedding("back")["data"]
        many = client.describe_model("many")
        assert many["status"] == "failed" and many["replicas"] == []
        assert "replica" in many["error"] and "less than or equal to 64" in many["error"]
        assert saved_models(fleet_home)["many"] == entries["many"]  # kept to be repaired
        assert "entry 'many' cannot be restored: invalid request: replica" in _log(server)
    finally:
        server.stop()
