"""Which model makes room (fleet.cluster.supervisor.elastic): the least recently used one that
has a keep_alive, never one without, nor one not loaded; the estimate's choice is the same, made
on the cluster as it would be without them (fleet.cluster.supervisor.unload_preview)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.elastic import Elastic
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord, WorkerRecord
from fleet.cluster.supervisor.unload_preview import as_if_unloaded, by_worker
from fleet.errors import InsufficientMemory
from tests.cache_builders import minilm_family


def _model(uid: str, keep_alive: str | None, state: str = "ready") -> ModelRecord:
    family, spec = minilm_family()
    request = {"model_name": family.model_name, "model_uid": uid}
    if keep_alive is not None:
        request["keep_alive"] = keep_alive
    return ModelRecord(uid=uid, family=family, spec=spec, quantization="none",
                       engine="sentence_transformers", request=request,
                       replicas=[ReplicaRecord(replica_uid=f"{uid}-0", worker_address="w:1",
                                               state=state)])


def _elastic(*models: ModelRecord, default: float | None = None) -> Elastic:
    cluster = ClusterState()
    cluster.models.update({m.uid: m for m in models})
    return Elastic(cluster, launcher=None, restorer=None, plan=None, launch=None,  # type: ignore[arg-type]
                   default_keep_alive=default)


def test_the_least_recently_used_model_with_a_keep_alive_goes_first():
    now = time.monotonic()
    elastic = _elastic(_model("pinned", None), _model("old", "1h"), _model("recent", "1h"),
                       _model("unseen", "1h"), _model("loading", "1h", state="launching"))
    elastic._seen = {"pinned": (1, now - 900), "old": (5, now - 600), "recent": (9, now - 10)}
    assert elastic._least_recently_used(besides="new").uid == "old"
    assert elastic._least_recently_used(besides="old").uid == "recent"  # unseen: just used
    elastic._cluster.models["old"].idle = True
    assert elastic._least_recently_used(besides="new").uid == "recent"


def test_nothing_goes_without_a_keep_alive_unless_the_cluster_gives_one():
    assert _elastic(_model("pinned", None))._least_recently_used("new") is None
    assert _elastic(_model("pinned", "-1"))._least_recently_used("new") is None
    assert _elastic(_model("pinned", None), default=600.0)._least_recently_used("new").uid == \
        "pinned"


async def test_the_estimate_chooses_as_the_launch_would_and_unloads_nothing():
    now = time.monotonic()
    elastic = _elastic(_model("pinned", None), _model("old", "1h"), _model("older", "1h"),
                       _model("recent", "1h"))
    elastic._seen = {"old": (5, now - 600), "older": (2, now - 900), "recent": (9, now - 10)}
    asked = []

    async def plan(gone):  # room for the launch once two models are gone
        asked.append([m.uid for m in gone])
        refusal = InsufficientMemory("no room") if len(gone) < 2 else None
        return SimpleNamespace(refusal=refusal)

    planned, gone = await elastic.would_make_room(plan, "new")
    assert planned.refusal is None and [m.uid for m in gone] == ["older", "old"]
    assert asked == [[], ["older"], ["older", "old"]]
    assert all(not m.idle for m in elastic._cluster.models.values())


def test_the_cluster_as_if_models_were_unloaded_gets_their_memory_back():
    measured_at = time.monotonic()
    worker = WorkerRecord(address="w:1", ref=None, last_heartbeat=measured_at, resources={
        "memory_available": 1000, "gpus": [{"index": 0, "memory_free": 100},
                                           {"index": 1, "memory_free": 100}]})
    gone = _model("gone", "1h")
    gone.replicas = [
        ReplicaRecord(replica_uid="gone-0", worker_address="w:1", state="ready",
                      memory_bytes=300, ready_at=measured_at - 5),  # in the worker's report
        ReplicaRecord(replica_uid="gone-1", worker_address="w:1", state="launching",
                      memory_bytes=200),  # only promised: it goes with the model
        ReplicaRecord(replica_uid="gone-2", worker_address="w:1", state="ready", device="cuda",
                      gpus=[0, 1], memory_bytes=80, ready_at=measured_at - 5)]
    kept = _model("kept", "1h")
    workers, models = as_if_unloaded([worker], [gone, kept], [gone])
    assert [m.uid for m in models] == ["kept"]
    assert workers[0].resources["memory_available"] == 1300
    assert [g["memory_free"] for g in workers[0].resources["gpus"]] == [140, 140]
    assert worker.resources["memory_available"] == 1000  # the real record is untouched
    assert by_worker([gone, kept]) == {"w:1": ["gone", "kept"]}
