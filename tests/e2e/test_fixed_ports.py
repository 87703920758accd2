"""Every port a cluster listens on can be fixed, so that a firewall or a Kubernetes NetworkPolicy
can open exactly those: the API's (-p), the supervisor's and each worker's actor pool
(--actor-port), and each replica process's actor pool and replica channel (--replica-ports)."""

from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from fleet.client import Client
from fleet.cluster.worker.replica_ports import ReplicaPorts
from fleet.errors import Unavailable
from fleet.port_range import parse_port_range
from fleet.worker_join import reachable_address
from tests.conftest import FleetProcess, free_port
from tests.e2e.test_distributed import _joining, _wait_for_workers
from tests.netns import VethHosts, veth_host


@pytest.fixture
def second_host() -> Iterator[VethHosts]:
    """Another host on a real (virtual) network (tests.netns), as another pod would be."""
    with veth_host() as hosts:
        yield hosts


def _listening(process: psutil.Process) -> dict[int, set[int]]:
    """The TCP ports each process of the tree listens on, by pid."""
    ports: dict[int, set[int]] = {}
    for proc in [process, *process.children(recursive=True)]:
        found = {c.laddr.port for c in proc.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN}
        if found:
            ports[proc.pid] = found
    return ports


def _a_free_range(size: int) -> tuple[int, int]:
    """`size` consecutive ports above 20000 that nothing listens on now."""
    busy = {c.laddr.port for c in psutil.net_connections(kind="tcp")}
    for first in range(20000, 60000, size):
        if not busy & set(range(first, first + size)):
            return first, first + size - 1
    raise RuntimeError("no free port range")


def test_a_worker_and_its_replicas_listen_only_where_they_are_told(tmp_path, minilm_path):
    port, supervisor_actor, worker_actor = free_port(), free_port(), free_port()
    first, last = _a_free_range(6)
    supervisor = FleetProcess(["supervisor", "-p", str(port), "--actor-port",
                               str(supervisor_actor)], tmp_path / "sup", port).wait_ready()
    worker = FleetProcess(["worker", "-e", supervisor.endpoint, "-H", "127.0.0.1",
                           "--actor-port", str(worker_actor)], tmp_path / "worker",
                          env={**_joining(supervisor), "FLEET_REPLICA_PORTS": f"{first}-{last}",
                               "FLEET_WARM_SPARE": "0"})
    try:
        client = Client(supervisor.endpoint)
        [joined] = _wait_for_workers(client, 1)
        assert joined["address"] == f"127.0.0.1:{worker_actor}"
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding", replica=2,
                                  model_path=minilm_path)
        # Answered through the replicas' channels, on their fixed ports.
        for text in ("one", "two", "three", "four"):
            assert len(client.get_model(uid).create_embedding(text)["data"][0]["embedding"]) == 384
        listening = _listening(psutil.Process(worker.process.pid))
        assert listening.pop(worker.process.pid) == {worker_actor}
        # Each replica process: its actor pool's port and the next one, its channel.
        assert {r["pid"] for r in client.describe_model(uid)["replicas"]} == set(listening)
        assert sorted(listening.values(), key=min) == [{first, first + 1}, {first + 2, first + 3}]
        assert set(_listening(psutil.Process(supervisor.process.pid))[supervisor.process.pid]) \
            == {port, supervisor_actor}

        # A replica ended gives its ports back: the next one launched takes them again.
        client.terminate_model(uid)
        again = client.launch_model("all-MiniLM-L6-v2", model_type="embedding",
                                    model_path=minilm_path)
        [replica] = client.describe_model(again)["replicas"]
        assert _listening(psutil.Process(replica["pid"])) == {replica["pid"]: {first, first + 1}}
    finally:
        worker.stop()
        supervisor.stop()


def test_a_supervisor_on_every_interface_is_reached_by_workers_on_other_hosts(
        tmp_path, minilm_path, second_host: VethHosts):
    """As in a container or a pod: the supervisor listens on 0.0.0.0 and names its actors so;
    a worker on another host reaches them by the API's host, and serves from fixed ports."""
    here, there, run_there, _ = second_host
    port, actor_port = free_port(), free_port()
    supervisor = FleetProcess(["supervisor", "-H", "0.0.0.0", "-p", str(port), "--actor-port",
                               str(actor_port), "--insecure-no-auth", "--model-root",
                               minilm_path], tmp_path / "sup", port, host=here).wait_ready()
    worker = FleetProcess(["worker", "-e", supervisor.endpoint, "--actor-port", "9998",
                           "--replica-ports", "20000-20001"], tmp_path / "worker",
                          env={**_joining(supervisor), "FLEET_WARM_SPARE": "0"},
                          wrapper=run_there)
    try:
        client = Client(supervisor.endpoint)
        [joined] = _wait_for_workers(client, 1)
        assert joined["address"] == f"{there}:9998"
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding",
                                  model_path=minilm_path)
        assert len(client.get_model(uid).create_embedding("hi")["data"][0]["embedding"]) == 384
        assert client.replicas(uid)[0]["batch"]["api_channels"] == 1
    finally:
        worker_exit = worker.stop()
        supervisor.stop()  # whatever the worker did: a failed test leaves no server behind
    assert worker_exit == 0, worker.output()


@pytest.mark.parametrize("given, expected", [
    ("0.0.0.0:9998", "fleet-supervisor:9998"), ("[::]:9998", "fleet-supervisor:9998"),
    ("10.1.2.3:9998", "10.1.2.3:9998"),
])
def test_a_wildcard_actor_address_is_reached_by_the_api_host(given, expected):
    assert reachable_address(given, "http://fleet-supervisor:9997") == expected


def test_pairs_of_ports_are_handed_out_once_and_given_back():
    ports = ReplicaPorts((30000, 30004))  # two whole pairs; the odd port is never used
    assert ports.take() == (30000, 30001)
    assert ports.take() == (30002, 30003)
    with pytest.raises(Unavailable, match="30000-30004"):
        ports.take()
    ports.release("10.0.0.5:30000")
    assert ports.take() == (30000, 30001)


@pytest.mark.parametrize("text, message", [
    ("30000", "START-END"), ("30000-", "START-END"), ("80-100", "1024-65535"),
    ("40000-30000", "START <= END"), ("30000-70000", "1024-65535"), ("30000-30000", "two ports"),
])
def test_a_bad_port_range_is_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_port_range(text)
