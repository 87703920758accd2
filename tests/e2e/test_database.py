"""The cluster's state in its database, end to end with `fleet local`: a FLEET_HOME of Fleet 0.1
starts with its registrations and launched models (options, replica counts, keep_alive,
autoscaling bounds) and serves them; a cluster on PostgreSQL comes back after a restart without
its password in any log; a database a newer Fleet upgraded stops the start with both versions
named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from functools import partial

from sqlalchemy import text

import fleet
from fleet.client import Client
from fleet.database import meta, open_database
from fleet.database.migrations import newest_revisions
from tests.concurrency import wait_for
from tests.conftest import FleetProcess, free_port, start_local
from tests.database.previous_release import (
    MODELS,
    previous_release_models,
    write_previous_release_home,
)
from tests.postgres import PASSWORD
from tests.state_db import home_database_url, saved_models

CUSTOM = {"model_name": "pg-minilm", "dimensions": 384, "max_tokens": 256, "language": ["en"],
          "model_id": "sentence-transformers/all-MiniLM-L6-v2"}


def _ready(client: Client, *uids: str) -> bool:
    models = client.list_models()
    return all(models.get(uid, {}).get("status") == "ready" for uid in uids)


def _logs(server: FleetProcess) -> str:
    files = [server.log_path, *(server.home / "logs").glob("*.log")]
    return "".join(path.read_text(errors="replace") for path in files)


def test_a_fleet_home_of_the_previous_release_starts_with_its_models(fleet_home, minilm_path):
    write_previous_release_home(fleet_home, minilm_path)
    expected = previous_release_models(minilm_path)
    for start in ("imported", "read back"):
        server = start_local(fleet_home, env={"FLEET_WARM_SPARE": "0"})
        try:
            client = Client(server.endpoint)
            assert wait_for(partial(_ready, client, *MODELS), timeout=180), client.list_models()
            for uid in MODELS:
                assert client.get_model(uid).create_embedding("back")["data"], (start, uid)
            registered = {r["model_name"] for r in client.list_model_registrations("LLM")
                          if not r["is_builtin"]}
            assert registered == {"team-llm"}, start
            assert client.describe_model("team-embed")["model_name"] == "team-minilm"
            # Options, replica counts, keep_alive and autoscaling bounds, as the files had them.
            assert saved_models(fleet_home) == expected, start
            options = client.describe_model("auto-embed")["launch_options"]
            assert (options["min_replicas"], options["max_replicas"]) == (1, 2)
            assert client.describe_model("team-embed")["launch_options"]["keep_alive"] == "10m"
        finally:
            assert server.stop() == 0, server.output()
    backups = sorted(path.name.split("-")[0] for path in fleet_home.glob("*.imported-*"))
    assert backups == ["registrations.imported", "state.imported"]
    assert "imported 2 registrations and 2 launched models" in _logs(server)


def test_a_cluster_on_postgresql_comes_back_and_never_shows_its_password(
        fleet_home, minilm_path, postgres, tmp_path):
    url = postgres.new_database()
    family_file = tmp_path / "pg-minilm.json"
    family_file.write_text(json.dumps({**CUSTOM, "model_uri": f"file://{minilm_path}"}))
    port = free_port()
    first = FleetProcess(["local", "-p", str(port), "--database-url", url], fleet_home, port,
                         env={"FLEET_WARM_SPARE": "0"}).wait_ready()
    try:
        registered = subprocess.run(
            [sys.executable, "-m", "fleet", "register", "-t", "embedding", "--file",
             str(family_file), "-e", first.endpoint], capture_output=True, text=True, timeout=60)
        assert registered.returncode == 0, registered.stderr
        client = Client(first.endpoint)
        client.launch_model("pg-minilm", model_type="embedding", model_uid="pg-embed", replica=2)
        embedded = client.get_model("pg-embed").create_embedding("kept")
        before = embedded["data"][0]["embedding"]
    finally:
        assert first.stop() == 0, first.output()
    assert saved_models(url)["pg-embed"]["replica"] == 2
    assert not (fleet_home / "fleet.db").exists()  # nothing kept beside PostgreSQL
    # The second start finds the database in its environment, as a deployment passes it.
    second = start_local(fleet_home, env={"FLEET_DATABASE_URL": url, "FLEET_WARM_SPARE": "0"})
    try:
        client = Client(second.endpoint)
        assert wait_for(lambda: _ready(client, "pg-embed"), timeout=180), client.list_models()
        # The first run's request, recorded in PostgreSQL (at stop at the latest), by family
        # and hour as PostgreSQL cuts them.
        used = client.usage(group_by=["model", "family"], bucket="hour")["data"]
        assert [(r["model"], r["family"], r["requests"], r["prompt_tokens"]) for r in used] == [
            ("pg-embed", "pg-minilm", 1, embedded["usage"]["prompt_tokens"])]
        after = client.get_model("pg-embed").create_embedding("kept")["data"][0]["embedding"]
        assert after == before
        assert client.describe_model("pg-embed")["replica"] == 2
        client.terminate_model("pg-embed")
        client.unregister_model("embedding", "pg-minilm")
    finally:
        assert second.stop() == 0, second.output()
    assert saved_models(url) == {}
    logs = _logs(first) + _logs(second)
    assert f"cluster state in postgresql+psycopg://fleet:***@127.0.0.1:{postgres.port}/" in logs
    assert PASSWORD not in logs and "s3cret" not in logs


def test_a_database_a_newer_fleet_upgraded_stops_the_start(fleet_home):
    db = open_database(home_database_url(fleet_home))
    with db.writing() as session:
        session.execute(text("UPDATE alembic_version SET version_num = '0042_from_later'"))
        meta.put(session, meta.UPGRADED_BY, {"fleet": "3.0.0", "revision": "0042_from_later"})
    db.close()
    port = free_port()
    started = time.monotonic()
    refused = subprocess.run([sys.executable, "-m", "fleet", "local", "-p", str(port)],
                             capture_output=True, text=True, timeout=120,
                             env={**_environment(), "FLEET_HOME": str(fleet_home)})
    assert refused.returncode != 0 and time.monotonic() - started < 60
    message = " ".join(refused.stderr.split())
    assert "has schema 0042_from_later (Fleet 3.0.0 upgraded it)" in message, refused.stderr
    assert f"newer than this Fleet {fleet.__version__} knows" in message
    assert f"its newest schema is {','.join(newest_revisions())}" in message
    assert "Traceback" not in refused.stderr


def _environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key != "FLEET_DATABASE_URL"}
