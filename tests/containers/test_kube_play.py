"""`podman kube play` of the rendered Kustomize base: the supervisor's Deployment and the workers'
StatefulSet start (changed only where podman cannot play them, tests/containers/kube_play.py),
the worker joins the supervisor with the cluster secret from the Secret `fleet`, and a GGUF
model (SmolLM2 on llama.cpp) launched through the API with the Secret's key answers a chat.
`podman kube down` tears it down, whatever happened."""

from __future__ import annotations

import random
import secrets
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.builders import _smollm2_gguf
from tests.concurrency import wait_for
from tests.containers.conftest import HEADERS, KEY
from tests.containers.images import podman
from tests.containers.kube_play import MODELS, for_podman, secret_json
from tests.kustomize import KUBERNETES, render

SECRET = "fleet"  # the name the manifests read (secretKeyRef)


@dataclass
class PlayedBase:
    file: Path
    network: str
    supervisor_ip: str
    worker_ip: str
    claims: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://{self.supervisor_ip}:9997"

    def containers(self) -> list[str]:
        listed = podman("ps", "-a", "--filter", "label=app.kubernetes.io/part-of=fleet",
                        "--format", "{{.Names}}", check=False)
        return [name for name in listed.stdout.split() if name.startswith("fleet-")]

    def anonymous_volumes(self) -> list[str]:
        """The emptyDir volumes: `podman kube down` removes the pods but leaves these."""
        names = self.containers()
        if not names:
            return []
        mounts = podman("inspect", "--format", "{{range .Mounts}}{{.Name}} {{end}}", *names,
                        check=False).stdout.split()
        return [name for name in mounts if name not in self.claims]


@pytest.fixture
def smollm2_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir(mode=0o755)
    shutil.copy(_smollm2_gguf(), folder / "smollm2.gguf")
    (folder / "smollm2.gguf").chmod(0o644)
    return folder


def _print_logs(played: PlayedBase) -> None:
    """Shown by pytest when the test fails."""
    for name in played.containers():
        logs = podman("logs", name, check=False)
        print(f"--- {name}\n{(logs.stdout + logs.stderr)[-4000:]}")


@pytest.fixture
def played(image: str, smollm2_folder: Path, tmp_path: Path) -> Iterator[PlayedBase]:
    subnet = f"10.89.{random.randint(200, 254)}"
    played = PlayedBase(tmp_path / "fleet.yaml", f"fleet-kube-{uuid.uuid4().hex[:8]}",
                        f"{subnet}.2", f"{subnet}.3")
    manifests = for_podman(render(KUBERNETES / "base"), image, smollm2_folder, played.supervisor_ip)
    played.claims = [m["metadata"]["name"] for m in manifests if m["kind"] == "PersistentVolumeClaim"]
    played.file.write_text(yaml.safe_dump_all(manifests))
    secret_file = tmp_path / "secret.json"
    secret_file.write_text(secret_json({"cluster-secret": secrets.token_hex(32), "api-keys": KEY}))
    try:
        podman("network", "create", "--subnet", f"{subnet}.0/24", played.network)
        podman("secret", "rm", SECRET, check=False)  # left by a run that was killed
        podman("secret", "create", SECRET, str(secret_file))
        podman("kube", "play", "--network", played.network, "--ip", played.supervisor_ip,
               "--ip", played.worker_ip, str(played.file), timeout=180)
        yield played
    finally:
        _print_logs(played)
        anonymous = played.anonymous_volumes()
        podman("kube", "down", str(played.file), check=False, timeout=180)
        for volume in [*played.claims, *anonymous]:
            podman("volume", "rm", "-f", volume, check=False)
        podman("secret", "rm", SECRET, check=False)
        podman("network", "rm", "-f", played.network, check=False)


def _workers(endpoint: str) -> list[dict[str, Any]]:
    reply = httpx.get(f"{endpoint}/v1/workers", headers=HEADERS, timeout=5)
    reply.raise_for_status()
    return reply.json()


def test_kube_play_of_the_base_serves_a_model(played):
    endpoint = played.endpoint
    # The worker found the supervisor by the Service's name and joined with the Secret's
    # cluster secret; it listens on its pod's address.
    [worker] = wait_for(lambda: _workers(endpoint), 120, 0.5, "the worker pod joined",
                        (httpx.HTTPError,))
    assert worker["address"] == f"{played.worker_ip}:9998"
    # Keys are on, from the Secret's api-keys.
    assert httpx.get(f"{endpoint}/v1/models", timeout=10).status_code == 401

    launched = httpx.post(f"{endpoint}/v1/models", headers=HEADERS, timeout=300, json={
        "model_name": "smollm2-instruct", "model_type": "LLM", "model_engine": "llama.cpp",
        "model_format": "gguf", "quantization": "Q4_1", "model_path": f"{MODELS}/smollm2.gguf"})
    assert launched.status_code == 200, launched.text
    uid = launched.json()["model_uid"]
    answer = httpx.post(f"{endpoint}/v1/chat/completions", headers=HEADERS, timeout=120, json={
        "model": uid, "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 8, "temperature": 0})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert body["usage"]["completion_tokens"] > 0
    [replica] = httpx.get(f"{endpoint}/v1/models/{uid}", headers=HEADERS,
                          timeout=10).json()["replicas"]
    assert replica["worker_address"] == worker["address"]
    # The supervisor's state is on its claim's volume, as on a cluster.
    state = podman("volume", "inspect", "--format", "{{.Mountpoint}}", "fleet-supervisor-state")
    assert (Path(state.stdout.strip()) / "fleet.db").is_file()
