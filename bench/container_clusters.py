"""The two clusters bench/container.py compares: a supervisor and a worker as containers of
Fleet's image on a network of their own, and the same two commands as processes on this
machine. Both hold the same key and cluster secret and read models from the same folder
(mounted read-only at /models in the containers)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.containers.images import podman  # noqa: E402

KEY = "sk-bench-container-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}
SECRET = "bench-cluster-secret-" + "0" * 43


def wait_for_workers(endpoint: str, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(f"{endpoint}/v1/workers", headers=HEADERS, timeout=5)
            if reply.status_code == 200 and len(reply.json()) >= count:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"no worker joined {endpoint} in {timeout_s} s")


class ContainerCluster:
    """`fleet supervisor` and `fleet worker` in two containers, each at a fixed address of a
    network made for them; the host reaches the API at the supervisor's address."""

    models_root = "/models"

    def __init__(self, image: str, models: Path):
        self.image, self.models = image, models
        self.tag = uuid.uuid4().hex[:8]
        self.network = f"fleet-bench-{self.tag}"
        self.subnet = f"10.89.{random.randint(50, 99)}"
        self.names: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://{self.subnet}.2:9997"

    def __enter__(self) -> ContainerCluster:
        podman("network", "create", "--subnet", f"{self.subnet}.0/24", self.network)
        try:
            self._run("supervisor", 2, {"FLEET_API_KEY": KEY},
                      ["supervisor", "-H", "0.0.0.0", "--model-root", self.models_root])
            self._run("worker", 3, {"FLEET_REPLICA_PORTS": "20000-20099"},
                      ["worker", "-e", self.endpoint])
            wait_for_workers(self.endpoint, 1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _run(self, role: str, host: int, env: dict[str, str], command: list[str]) -> None:
        name = f"fleet-bench-{role}-{self.tag}"
        environment = {"FLEET_CLUSTER_SECRET": SECRET, "FLEET_ACTOR_PORT": "9998", **env}
        podman("run", "-d", "--name", name, f"--network={self.network}",
               f"--ip={self.subnet}.{host}", *[f"--env={k}={v}" for k, v in environment.items()],
               "-v", f"{self.models}:{self.models_root}:ro", self.image, *command)
        self.names.append(name)

    def __exit__(self, *exc: Any) -> None:
        for name in self.names:
            podman("rm", "-f", "-v", "-t", "10", name, check=False, timeout=60)
        podman("network", "rm", "-f", self.network, check=False)


class PlainCluster:
    """The same two commands as processes of this machine's Python, on loopback."""

    def __init__(self, models: Path, port: int):
        self.models_root = str(models)
        self.port = port
        self._stack = ExitStack()
        self._processes: list[subprocess.Popen] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> PlainCluster:
        try:
            self._start({"FLEET_API_KEY": KEY}, ["supervisor", "-H", "127.0.0.1",
                                                 "-p", str(self.port), "--model-root", self.models_root])
            self._start({}, ["worker", "-e", self.endpoint])
            wait_for_workers(self.endpoint, 1)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _start(self, env: dict[str, str], command: list[str]) -> None:
        home = self._stack.enter_context(tempfile.TemporaryDirectory())
        environment = {**os.environ, "FLEET_HOME": home, "FLEET_CLUSTER_SECRET": SECRET, **env}
        self._processes.append(subprocess.Popen(
            [sys.executable, "-m", "fleet", *command], env=environment,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def __exit__(self, *exc: Any) -> None:
        for process in reversed(self._processes):  # the worker first, as a container stops
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        self._stack.close()


def launch_models(endpoint: str, root: str) -> None:
    """MiniLM as GGUF for embeddings and SmolLM2 for chat, both on llama.cpp (the image has no
    PyTorch), uids `minilm` and `smol`."""
    family = {"model_name": "minilm-gguf", "dimensions": 384, "max_tokens": 256, "language": ["en"],
              "model_specs": [{"model_format": "gguf", "quantizations": ["F32"],
                               "model_uri": f"{root}/minilm.gguf"}]}
    for path, body in (
        ("/v1/model_registrations/embedding", {"model": family, "persist": True}),
        ("/v1/models", {"model_name": "minilm-gguf", "model_type": "embedding",
                        "model_uid": "minilm"}),
        ("/v1/models", {"model_name": "smollm2-instruct", "model_type": "LLM", "model_uid": "smol",
                        "model_engine": "llama.cpp", "model_format": "gguf",
                        "quantization": "Q4_1", "model_path": f"{root}/smollm2.gguf"}),
    ):
        reply = httpx.post(f"{endpoint}{path}", json=body, headers=HEADERS, timeout=600)
        if reply.status_code != 200:
            raise RuntimeError(f"{path}: {reply.status_code} {reply.text}")
