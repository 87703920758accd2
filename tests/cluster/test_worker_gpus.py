"""The worker's side of GPU sharing: it gives a replica the GPUs placement chose, records that
several replicas share one, tells vLLM its share of the memory, and keeps a replica without an
estimate on GPUs of its own. Only NVML's report is faked (two 80 GiB GPUs): no GPU here."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.catalogue.registry import parse_family
from fleet.cluster.supervisor.memory_estimate import GIB
from fleet.cluster.worker import resources
from fleet.cluster.worker.actor import WorkerActor
from fleet.engines.launch_options import VLLMOptions
from fleet.errors import BadRequest
from fleet.messages import ReplicaLaunch


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> WorkerActor:
    gpus = [{"index": i, "name": "H100", "memory_total": 80 * GIB, "memory_free": free * GIB,
             "memory_used": (80 - free) * GIB, "utilization": 0} for i, free in ((0, 79), (1, 60))]
    monkeypatch.setattr(resources, "gpu_info", lambda: [dict(g) for g in gpus])
    return WorkerActor("127.0.0.1:1", main_pool=None, warm_spare=False)


def launch(gpu_idx: Any = None, share_gib: float | None = None, **options: Any) -> ReplicaLaunch:
    family = parse_family("LLM", {"model_name": "smollm2", "model_ability": ["chat"],
                                  "context_length": 2048,
                                  "model_specs": [{"model_format": "pytorch",
                                                   "model_size_in_billions": "0_135"}]})
    return ReplicaLaunch(model_uid="m", family=family, spec=family.model_specs[0],
                         quantization="none", model_engine="vllm",
                         engine_options=VLLMOptions(**options), gpu_idx=gpu_idx,
                         gpu_memory_bytes=int(share_gib * GIB) if share_gib else None)


def test_two_replicas_share_the_gpu_placement_chose_each_told_its_share(worker):
    first = worker._assign_gpus("a-0:x", launch(gpu_idx=[0], share_gib=10))
    second = worker._assign_gpus("b-0:y", launch(gpu_idx=[0], share_gib=20,
                                                 gpu_memory_utilization=0.3))
    assert first.device == second.device == "cuda"
    assert first.envs["CUDA_VISIBLE_DEVICES"] == second.envs["CUDA_VISIBLE_DEVICES"] == "0"
    assert isinstance(first.engine_options, VLLMOptions)
    assert first.engine_options.gpu_memory_utilization == 0.125  # 10 GiB of 80
    # A launch that set its own keeps it.
    assert isinstance(second.engine_options, VLLMOptions)
    assert second.engine_options.gpu_memory_utilization == 0.3
    assert worker.describe()["gpu_owner"] == {0: ["a-0", "b-0"]}
    worker._release_gpus("a-0:x")
    assert worker.describe()["gpu_owner"] == {0: ["b-0"]}
    worker._release_gpus("b-0:y")
    assert worker.describe()["gpu_owner"] == {}


def test_a_replica_without_an_estimate_holds_its_gpu_whole(worker):
    worker._assign_gpus("a-0:x", launch(gpu_idx=0, share_gib=10))
    # No share, not pinned: a GPU no replica holds (GPU 1), its vLLM left to size itself.
    whole = worker._assign_gpus("u-0:z", launch())
    assert whole.envs["CUDA_VISIBLE_DEVICES"] == "1"
    assert isinstance(whole.engine_options, VLLMOptions)
    assert whole.engine_options.gpu_memory_utilization is None
    with pytest.raises(BadRequest, match=r"GPU\(s\) \[1\] .* held whole"):
        worker._assign_gpus("b-0:y", launch(gpu_idx=[1], share_gib=1))
    with pytest.raises(BadRequest, match=r"GPU\(s\) \[0\] .* in use"):
        worker._assign_gpus("v-0:w", launch(gpu_idx=[0]))
    with pytest.raises(BadRequest, match=r"has no GPU \[3\] \(its GPUs: \[0, 1\]\)"):
        worker._assign_gpus("c-0:v", launch(gpu_idx=[3], share_gib=1))
    # The refused launches hold nothing.
    assert worker.describe()["gpu_owner"] == {0: ["a-0"], 1: ["u-0"]}
