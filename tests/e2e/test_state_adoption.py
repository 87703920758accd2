"""A supervisor restarted with a corrupt, partial or lost state never ends a replica that its
worker still runs: the replica is adopted as it is (same process), the model is listed and
serves, and its entry in the saved state is rebuilt from what the worker reports."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from fleet.client import Client
from tests.concurrency import wait_for
from tests.conftest import FleetProcess, free_port
from tests.e2e.test_cluster_churn import _answers
from tests.e2e.test_distributed import _joining, _wait_for_workers
from tests.state_db import save_model_entry, saved_models

# What a careless edit of the database can leave of the entry of "kept".
ENTRIES = {
    "an entry that is not a launch request": 42,
    "an entry without model_name": {"model_type": "embedding"},
    "fields of the wrong type": {"model_name": "all-MiniLM-L6-v2", "replica": "two",
                                 "n_gpu": [1], "envs": "A=1"},
    "an unknown model_type": {"model_name": "all-MiniLM-L6-v2", "model_type": "nonsense"},
    "past the launch limits": {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding",
                               "replica": 100000},
}
# The database lost (a new one is made at the start), alone or beside a state file of Fleet 0.1
# that a crash, a full disk or a careless edit left unreadable: the last run's models are unknown.
LEGACY_FILES = {
    "the database lost": None,
    "... and a state file cut short": '{"kept": {"model_name": "all-Mini',
    "... and an empty state file": "",
    "... and a state file that is not an object": "[1, 2]",
}


def _corruptions(home: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    for corruption, entry in ENTRIES.items():
        yield corruption, partial(save_model_entry, home, "kept", entry)
    for corruption, content in LEGACY_FILES.items():
        yield corruption, partial(_lose_the_database, home, content)


def _lose_the_database(home: Path, state_file: str | None) -> None:
    for path in home.glob("fleet.db*"):  # with its -wal and -shm files
        path.unlink()
    if state_file is not None:
        (home / "state").mkdir(exist_ok=True)
        (home / "state" / "models.json").write_text(state_file)


def _kill(supervisor: FleetProcess) -> None:
    os.kill(supervisor.process.pid, signal.SIGKILL)  # the worker and its replica stay up
    supervisor.process.wait()


def test_a_corrupt_state_never_ends_a_replica_that_a_worker_still_runs(tmp_path, minilm_path):
    port, actor_port = free_port(), free_port()
    args = ["supervisor", "-p", str(port), "--actor-port", str(actor_port)]
    env = {"FLEET_RESTORE_GRACE_S": "3"}
    supervisor = FleetProcess(args, tmp_path / "sup", port, env=env).wait_ready()
    worker = FleetProcess(["worker", "-e", supervisor.endpoint, "-H", "127.0.0.1"],
                          tmp_path / "worker",
                          env={**_joining(supervisor), "FLEET_HEARTBEAT_INTERVAL_S": "1",
                               "FLEET_WARM_SPARE": "0"})
    try:
        client = Client(supervisor.endpoint)
        _wait_for_workers(client, 1)
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", model_uid="kept",
                                  model_path=minilm_path)
        pid = client.replicas(uid)[0]["pid"]
        before = client.get_model(uid).create_embedding("kept")["data"][0]["embedding"]
        for corruption, corrupt in _corruptions(supervisor.home):
            _kill(supervisor)
            corrupt()
            supervisor = FleetProcess(args, supervisor.home, port, env=env).wait_ready()
            listed = wait_for(lambda: client.list_models().get(uid, {}).get("status") == "ready",
                              timeout=40)
            assert listed, corruption
            replica = client.describe_model(uid)["replicas"][0]
            assert replica["pid"] == pid and replica["restarts"] == 0, (corruption, replica)
            wait_for(partial(_answers, supervisor.endpoint, uid), timeout=10)
            after = client.get_model(uid).create_embedding("kept")["data"][0]["embedding"]
            assert after == before, corruption
            assert [w["replicas"] for w in client.list_workers()] == [["kept-0"]], corruption
            # The entry is rebuilt from the worker's report: a later restart brings it back.
            rebuilt = saved_models(supervisor.home)["kept"]
            assert rebuilt["model_name"] == "all-MiniLM-L6-v2", (corruption, rebuilt)
            assert rebuilt["model_path"] == minilm_path and rebuilt["replica"] == 1, corruption
        log = (supervisor.home / "logs" / "supervisor.log").read_text(errors="replace")
        assert "rebuilt from the replicas its workers run" in log
    finally:
        assert worker.stop() == 0, worker.output()
        supervisor.stop()
