"""The restore of the last run's models from the saved state (fleet.database.launched_models;
the store itself: tests/database): each model is restored on its own (waiting, failed or kept as
it is), never dropped from the state.

On SQLite and on a real PostgreSQL (the `db` fixture)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fleet.catalogue.registry import Catalogue
from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.restore import Restorer
from fleet.database import Database, open_database
from fleet.database.launched_models import ModelStore
from fleet.errors import BadRequest, Unavailable

MINILM = {"model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": "good"}


def _restorer(db: Database, entries: dict[str, Any]) -> tuple[Restorer, ClusterState]:
    ModelStore(db).write(entries)  # what the last run saved
    cluster = ClusterState()
    catalogue = Catalogue()
    return Restorer(cluster, ModelStore(db), lambda: catalogue), cluster


def test_each_model_is_restored_on_its_own_and_none_is_dropped(db, caplog):
    entries = {
        "broken": 42,  # malformed: not a launch request
        "nameless": {"model_type": "embedding"},
        "ghost": {"model_name": "no-such-model", "model_type": "embedding"},
        "crashes": {**MINILM, "model_uid": "crashes"},
        "early": {**MINILM, "model_uid": "early"},
        "good": MINILM,
    }
    restorer, cluster = _restorer(db, entries)
    launched: list[str] = []

    async def launch(request: dict[str, Any], **_: Any) -> str:
        uid = request["model_uid"]
        if uid == "crashes":
            raise RuntimeError("an engine's own surprise")
        if uid == "early":
            raise Unavailable("no worker has joined the cluster yet", code="no_worker")
        if request["model_name"] == "no-such-model":
            raise BadRequest("no model named no-such-model")
        launched.append(uid)
        restorer.save({uid: request})  # what the supervisor's launch does
        return uid

    with caplog.at_level(logging.ERROR):
        asyncio.run(restorer.run(launch))
    assert launched == ["good"]  # the failures before it did not stop it
    assert cluster.models["crashes"].state == "failed"
    assert "RuntimeError: an engine's own surprise" in cluster.models["crashes"].error
    assert cluster.models["early"].state == "waiting"
    assert "no worker has joined" in cluster.models["early"].describe()["error"]
    assert "early" in restorer.pending  # tried again when a worker joins
    assert "ghost" not in cluster.models and "broken" not in cluster.models
    assert "entry 'broken' cannot be restored" in caplog.text
    # The last write (the launch of "good") kept every other entry as it was.
    assert ModelStore(db).load() == entries


def test_a_waiting_model_is_restored_when_asked_again(db):
    restorer, cluster = _restorer(db, {"early": {**MINILM, "model_uid": "early"}})
    workers: list[str] = []

    async def launch(request: dict[str, Any], **_: Any) -> str:
        if not workers:
            raise BadRequest("no worker at 10.0.0.9", code="no_such_worker")
        restorer.save({request["model_uid"]: request})
        return request["model_uid"]

    asyncio.run(restorer.run(launch))
    assert cluster.models["early"].state == "waiting" and restorer.pending
    workers.append("10.0.0.9")
    asyncio.run(restorer.run(launch))
    assert not restorer.pending


def test_an_entry_a_launch_would_refuse_fails_alone_with_its_reason(db, caplog):
    entries = {
        "many": {**MINILM, "model_uid": "many", "replica": 100000},
        "odd": {**MINILM, "model_uid": "odd", "model_type": "nonsense"},
        "typed": {**MINILM, "model_uid": "typed", "n_gpu": [1], "envs": "A=1"},
        "a/b": MINILM,  # a uid no launch may take
        "good": MINILM,
    }
    with caplog.at_level(logging.ERROR):
        restorer, cluster = _restorer(db, entries)
    assert list(restorer.pending) == ["good"]
    assert restorer.unreadable == {"many", "odd", "typed", "a/b"}
    many = cluster.models["many"].describe()
    assert many["status"] == "failed" and "less than or equal to 64" in many["error"]
    assert "replica" in many["error"]
    assert "n_gpu" in cluster.models["typed"].describe()["error"]
    assert "odd" not in cluster.models  # no model type to show it under: logged
    assert "unknown model type 'nonsense'" in caplog.text and "model_uid must not" in caplog.text

    async def launch(request: dict[str, Any], **_: Any) -> str:
        restorer.save({request["model_uid"]: request})
        return request["model_uid"]

    asyncio.run(restorer.run(launch))
    assert not restorer.pending
    assert ModelStore(db).load() == entries  # the refused ones kept as they were


def test_only_a_lost_or_unreadable_entry_lets_a_running_replica_be_adopted(db, tmp_path):
    restorer, _ = _restorer(db, {"bad": {"model_name": 5}, "good": MINILM})
    assert restorer.adoptable("good") and restorer.adoptable("bad")
    assert not restorer.adoptable("gone")  # a readable file without it: it was terminated

    # A new database: the models of the last run are unknown (so is a state file of Fleet 0.1
    # that could not be read: tests/database/test_legacy_import.py).
    new = open_database(f"sqlite:///{tmp_path / 'new' / 'fleet.db'}")
    lost = Restorer(ClusterState(), ModelStore(new), Catalogue)
    assert lost.state_lost and lost.adoptable("anything")
    lost.save({"launched-here": {**MINILM, "model_uid": "launched-here"}})
    lost.save({"launched-here": None})
    assert not lost.adoptable("launched-here")  # this run terminated it

    assert restorer.rebuild("bad", {**MINILM, "model_uid": "ignored", "replica": 2})
    assert restorer.pending["bad"]["model_uid"] == "bad" and "bad" in restorer.rebuilt
    assert not restorer.rebuild("worse", {"model_name": "m", "replica": 65})
    assert "worse" not in restorer.pending
    new.close()
