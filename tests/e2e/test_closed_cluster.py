"""A closed cluster: a real `fleet supervisor` (with an API key) and `fleet worker` (given the
supervisor's cluster secret, with its own FLEET_HOME as on another machine) serving MiniLM.

- A pickle that would create a file, sent in a crafted xoscar frame (unsigned, or signed with
  another key) to the supervisor's, the worker's and the replica's pools, runs nowhere, and the
  cluster goes on serving; the same frame does run in a pool without a key (the control).
- A worker with another secret cannot join, and one without a secret says where to find it.
- The replica channel gives nothing to a client without the secret, and a client that never
  reads its answers slows no other request."""

from __future__ import annotations

import asyncio
import pathlib
import pickle
import socket
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import xoscar as xo
from xoscar.serialization._security import pack_manifest, sign_buffers

from fleet import actor_handshake, cluster_secret
from fleet.channel import auth as channel_auth
from fleet.channel.codec import encode_frame
from fleet.client import Client
from fleet.errors import BadRequest
from fleet.worker_join import ADDRESS_PURPOSE, WORKER_PROOF_HEADER, check_admitted
from tests.conftest import FleetProcess, free_port

KEY = "sk-closed-cluster-admin-0123456789abcdef"
OTHER_SECRET = "not-this-clusters-secret-0123456789"


@dataclass
class Cluster:
    supervisor: FleetProcess
    client: Client
    secret: str
    uid: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, minilm_path: str) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("closed-cluster")
    port = free_port()
    supervisor = FleetProcess(["supervisor", "-p", str(port), "--api-key", KEY], root / "sup",
                              port).wait_ready()
    secret = (root / "sup" / "cluster-secret").read_text()
    # The warm spare stays on: the replica runs in it, so it is checked too.
    worker = FleetProcess(["worker", "-e", supervisor.endpoint, "-H", "127.0.0.1"],
                          root / "worker", env={"FLEET_CLUSTER_SECRET": secret})
    try:
        client = Client(supervisor.endpoint, api_key=KEY)
        _wait_for(lambda: len(client.list_workers()) == 1, "the worker did not join")
        uid = client.launch_model("all-MiniLM-L6-v2", model_type="embedding",
                                  model_path=minilm_path)
        yield Cluster(supervisor, client, secret, uid)
    finally:
        worker.stop()
        supervisor.stop()


def _wait_for(condition: Any, failure: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(failure)
        time.sleep(0.2)


# ---- crafted xoscar frames ---------------------------------------------------------------

class _Touch:
    """Unpickling this creates `path`: the smallest proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return pathlib.Path.touch, (self.path,)


def _unsigned_frame(marker: Path) -> bytes:
    """xoscar's unauthenticated wire format: a prefix, then a pickled header."""
    header = pickle.dumps([{"payload": _Touch(marker)}])
    return struct.pack("<BQH", 1, len(header), 0) + header


def _frame_signed_with(key: bytes, marker: Path) -> bytes:
    """xoscar's authenticated wire format, signed with a key of the attacker's choosing."""
    header = pickle.dumps([{"payload": _Touch(marker)}])
    manifest = pack_manifest(len(header), [], [])
    prefix = struct.pack("<BQH", 2, len(manifest), 0)
    return (prefix + sign_buffers(key, (prefix, manifest))
            + sign_buffers(key, (prefix, manifest, header)) + manifest + header)


def _send_raw(address: str, data: bytes) -> bytes:
    """Everything the port answers to `data` before it closes the connection."""
    host, port = address.rsplit(":", 1)
    received = b""
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _send_and_listen(address: str, data: bytes, listen_s: float = 3.0) -> bytes:
    """Send `data` on a new connection and keep what comes back for `listen_s` (a pool that
    takes the frames answers and keeps the connection open)."""
    host, port = address.rsplit(":", 1)
    received = b""
    with socket.create_connection((host, int(port)), timeout=listen_s) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def _as_cluster_member(secret: str, monkeypatch: pytest.MonkeyPatch, work: Any) -> Any:
    """Run `work()` (a coroutine function) with this process holding the cluster's key, as a
    worker does (its connections open with the handshake): how a test finds addresses the API
    does not show."""
    actor_handshake.install()
    monkeypatch.setenv(cluster_secret.ENV_XOSCAR_KEY, cluster_secret.xoscar_key(secret))
    return asyncio.run(work())


def _replica_addresses(cluster: Cluster, supervisor_address: str,
                       monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(the replica's pool address, its channel's address)."""
    async def ask() -> tuple[str, str]:
        supervisor = await xo.actor_ref(address=supervisor_address, uid="fleet-supervisor")
        address, actor_uid, *_ = (await supervisor.route(cluster.uid))[0]
        replica = await xo.actor_ref(address=address, uid=actor_uid)
        return address, await replica.channel_address()

    return _as_cluster_member(cluster.secret, monkeypatch, ask)


def _supervisor_address(cluster: Cluster) -> str:
    response = httpx.get(f"{cluster.supervisor.endpoint}/v1/address",
                         headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    response.raise_for_status()
    return response.json()


def _embed(cluster: Cluster, text: str) -> list[float]:
    return cluster.client.get_model(cluster.uid).create_embedding(text)["data"][0]["embedding"]


# ---- the tests ---------------------------------------------------------------------------

def test_the_address_needs_an_admin_key_or_a_worker_proof(cluster: Cluster):
    url = f"{cluster.supervisor.endpoint}/v1/address"
    assert httpx.get(url, timeout=10).status_code == 401
    wrong = {WORKER_PROOF_HEADER: cluster_secret.timed_proof(OTHER_SECRET, ADDRESS_PURPOSE)}
    assert httpx.get(url, headers=wrong, timeout=10).status_code == 401
    right = {WORKER_PROOF_HEADER: cluster_secret.timed_proof(cluster.secret, ADDRESS_PURPOSE)}
    assert httpx.get(url, headers=right, timeout=10).json() == _supervisor_address(cluster)


def test_a_crafted_pickle_runs_in_no_pool_and_every_pool_keeps_serving(
        cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm_path: str):
    supervisor = _supervisor_address(cluster)
    (worker,) = [w["address"] for w in cluster.client.list_workers()]
    replica, _ = _replica_addresses(cluster, supervisor, monkeypatch)
    assert len({supervisor, worker, replica}) == 3  # three processes, three ports
    markers = []
    for pool, address in (("supervisor", supervisor), ("worker", worker), ("replica", replica)):
        for kind, frame in (("unsigned", _unsigned_frame),
                            ("wrong-key", lambda m: _frame_signed_with(b"guessed-key", m))):
            marker = tmp_path / f"{pool}-{kind}"
            markers.append(marker)
            assert _send_raw(address, frame(marker)) == b""  # closed without a word
    time.sleep(0.5)
    assert [m.name for m in markers if m.exists()] == []
    # Every pool still serves: the replica answers, the supervisor places a new model on the
    # worker, which starts its process.
    assert len(_embed(cluster, "after the attack")) == 384
    second = cluster.client.launch_model("all-MiniLM-L6-v2", model_type="embedding",
                                         model_path=minilm_path, model_uid="second-minilm")
    assert len(cluster.client.get_model(second).create_embedding("x")["data"][0]["embedding"]) \
        == 384
    cluster.client.terminate_model(second)
    assert len(cluster.client.list_workers()) == 1


class _Recorder:
    """A TCP relay in front of a pool that keeps every byte its clients send it, one entry per
    connection: what someone on the network between two hosts can record."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self._target = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.sent: list[bytearray] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._target)
            record = bytearray()
            self.sent.append(record)
            threading.Thread(target=self._pump, args=(client, upstream, record),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None),
                             daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, record: bytearray | None) -> None:
        try:
            while chunk := source.recv(65536):
                if record is not None:
                    record.extend(chunk)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        self._listener.close()


def test_a_recorded_terminate_frame_sent_again_terminates_nothing(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch, minilm_path: str):
    """A member's genuine, signed `terminate_model` call, recorded on its way to the
    supervisor, then sent again byte for byte by someone without the secret (the whole
    connection, and its frames alone) after the model was launched again."""
    from xoscar.core import ActorRef

    supervisor = _supervisor_address(cluster)
    launch = {"model_type": "embedding", "model_path": minilm_path, "model_uid": "replayed"}
    cluster.client.launch_model("all-MiniLM-L6-v2", **launch)
    recorder = _Recorder(supervisor)
    try:
        async def terminate() -> None:
            # A reference made by hand is not looked up: its calls go through the recorder.
            await ActorRef(recorder.address, "fleet-supervisor").terminate_model("replayed")

        _as_cluster_member(cluster.secret, monkeypatch, terminate)
    finally:
        recorder.close()
    assert "replayed" not in cluster.client.list_models()
    (recorded,) = [bytes(r) for r in recorder.sent if r]
    handshake = len(actor_handshake.MAGIC) + actor_handshake.NONCE_BYTES \
        + actor_handshake.PROOF_BYTES
    frames = recorded[handshake:] if recorded.startswith(actor_handshake.MAGIC) else recorded
    assert frames

    cluster.client.launch_model("all-MiniLM-L6-v2", **launch)
    for replay in (recorded, frames):
        _send_and_listen(supervisor, replay)
    time.sleep(1.0)  # what the frame would have done had time to happen
    assert "replayed" in cluster.client.list_models()
    vector = cluster.client.get_model("replayed").create_embedding("still here")
    assert len(vector["data"][0]["embedding"]) == 384
    cluster.client.terminate_model("replayed")


def test_the_same_frame_runs_code_in_a_pool_without_a_key(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """The control: the frames above are a real attack on a pool that has no key."""
    monkeypatch.delenv(cluster_secret.ENV_XOSCAR_KEY, raising=False)
    marker = tmp_path / "ran"

    async def attack() -> None:
        pool = await xo.create_actor_pool("127.0.0.1", n_process=0)
        try:
            await asyncio.to_thread(_send_raw, pool.external_address, _unsigned_frame(marker))
        finally:
            await pool.stop()

    asyncio.run(attack())
    assert marker.exists()


def test_a_worker_with_another_secret_cannot_join(cluster: Cluster, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch):
    intruder = FleetProcess(["worker", "-e", cluster.supervisor.endpoint, "-H", "127.0.0.1"],
                            tmp_path / "intruder", env={"FLEET_CLUSTER_SECRET": OTHER_SECRET})
    try:
        assert intruder.process.wait(60) != 0
    finally:
        intruder.stop()
    output = intruder.log_path.read_text()
    assert "the supervisor refused this worker: wrong cluster secret" in output
    assert len(cluster.client.list_workers()) == 1
    # Without API keys /v1/address is open: the supervisor's pool itself refuses the worker.
    supervisor = _supervisor_address(cluster)
    with pytest.raises(BadRequest, match="wrong cluster secret"):
        _as_cluster_member(OTHER_SECRET, monkeypatch, lambda: check_admitted(supervisor))
    _as_cluster_member(cluster.secret, monkeypatch, lambda: check_admitted(supervisor))


def test_a_worker_without_a_secret_says_where_to_find_it(cluster: Cluster, tmp_path: Path):
    lost = FleetProcess(["worker", "-e", cluster.supervisor.endpoint, "-H", "127.0.0.1"],
                        tmp_path / "no-secret", env={"FLEET_CLUSTER_SECRET": ""})
    try:
        assert lost.process.wait(60) != 0
    finally:
        lost.stop()
    output = lost.log_path.read_text()
    assert "no cluster secret" in output and "--cluster-secret" in output
    assert "FLEET_HOME, in the file cluster-secret" in output


def test_a_channel_client_without_the_secret_gets_nothing(cluster: Cluster,
                                                         monkeypatch: pytest.MonkeyPatch):
    _, channel = _replica_addresses(cluster, _supervisor_address(cluster), monkeypatch)
    host, port = channel.rsplit(":", 1)
    call = encode_frame({"call": 1, "method": "embed", "calls": [[["leak?"]]]})
    forged = encode_frame({"channel": "t", "nonce": "n", "proof": "0" * 64})
    for attempt in (call, forged + call):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            (size,) = struct.unpack(">I", _recv_exactly(sock, 4))
            assert b"challenge" in _recv_exactly(sock, size)
            sock.sendall(attempt)
            assert sock.recv(65536) == b""  # closed, nothing answered
    assert len(_embed(cluster, "the API's own channel still works")) == 384
    assert cluster.client.replicas(cluster.uid)[0]["batch"]["api_channels"] == 1


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "closed early"
        data += chunk
    return data


def _stuck_channel(address: str, secret: str) -> socket.socket:
    """A channel client with the secret that, once in, never reads (a small receive buffer, so
    the replica's side fills soon)."""
    host, port = address.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    (size,) = struct.unpack(">I", _recv_exactly(sock, 4))
    nonces = (orjson.loads(_recv_exactly(sock, size))["challenge"], "n")
    sock.sendall(encode_frame({"channel": "stuck", "nonce": "n",
                               "proof": channel_auth.proof(secret, "api", *nonces, "stuck")}))
    (size,) = struct.unpack(">I", _recv_exactly(sock, 4))
    assert b'"ready":true' in _recv_exactly(sock, size)
    return sock


def _timed_embeddings(cluster: Cluster, count: int) -> list[float]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        assert len(_embed(cluster, f"probe {i}")) == 384
        times.append(time.perf_counter() - started)
    return times


def test_a_channel_client_that_never_reads_does_not_slow_other_requests(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch):
    _, channel = _replica_addresses(cluster, _supervisor_address(cluster), monkeypatch)
    usual = statistics.median(_timed_embeddings(cluster, 10))
    stuck = _stuck_channel(channel, cluster.secret)
    try:
        # 10 answers of 256 vectors of one token each (3.9 MB): more than the two sockets'
        # buffers hold (~3 MB on loopback), for as little computing as that takes.
        call = encode_frame({"call": 0, "method": "embed", "calls": [[[[1000]] * 256]] * 2})
        stuck.sendall(call * 5)

        def waiting_unread() -> bool:
            batch = cluster.client.replicas(cluster.uid)[0]["batch"]
            return batch["api_channel_backlog_bytes"] > 0 and batch["queued"] == 0

        _wait_for(waiting_unread, "the stuck client's answers never queued up")
        slowest = max(_timed_embeddings(cluster, 10))
        started = time.perf_counter()
        cluster.client.replicas(cluster.uid)  # an actor call on the replica's event loop
        status_time = time.perf_counter() - started
        assert slowest < max(0.5, 10 * usual), (slowest, usual)
        assert status_time < 0.5
        assert cluster.client.replicas(cluster.uid)[0]["batch"]["api_channels"] == 2
    finally:
        stuck.close()
    _wait_for(lambda: cluster.client.replicas(cluster.uid)[0]["batch"]["api_channels"] == 1,
              "the replica kept the closed connection")
    assert cluster.client.replicas(cluster.uid)[0]["batch"]["api_channel_backlog_bytes"] == 0
