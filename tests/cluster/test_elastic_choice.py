"""Which model makes room (fleet.cluster.supervisor.elastic): the least recently used one that
has a keep_alive, never one without, nor one not loaded."""

from __future__ import annotations

import time

from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.elastic import Elastic
from fleet.cluster.supervisor.records import ModelRecord, ReplicaRecord
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
