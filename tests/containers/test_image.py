"""Fleet's image, run for real with podman: `fleet local` in a container, with keys and a model
folder mounted read-only, launches a GGUF model on llama.cpp and answers; after a restart of
the container the model is back, from the state on the container's volume. The image is the
one without PyTorch (EXTRAS=llama-cpp): PyPI's torch is a CUDA build of several GB."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.containers.conftest import HEADERS, KEY, MINILM_GGUF_FAMILY
from tests.containers.images import podman


@pytest.fixture
def container(image: str, models: Path) -> Iterator[tuple[str, str]]:
    """A `fleet local` container on the host's network (port published as itself)."""
    tag = uuid.uuid4().hex[:8]
    name, volume, port = f"fleet-test-{tag}", f"fleet-home-{tag}", free_port()
    podman("volume", "create", volume)
    podman("run", "-d", "--name", name, "--network=host", "-e", f"FLEET_API_KEY={KEY}",
           "-e", f"FLEET_PORT={port}", "-v", f"{volume}:/var/lib/fleet",
           "-v", f"{models}:/models:ro", image, "local", "-H", "0.0.0.0", "--model-root", "/models")
    try:
        yield name, f"http://127.0.0.1:{port}"
    finally:
        podman("logs", name, check=False)
        podman("rm", "-f", "-v", "-t", "5", name, check=False, timeout=60)
        podman("volume", "rm", "-f", volume, check=False)


def _wait_ready(endpoint: str, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{endpoint}/status", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(podman("logs", name, check=False).stdout[-3000:])


def _embedding(endpoint: str, model: str) -> list[float]:
    reply = httpx.post(f"{endpoint}/v1/embeddings", headers=HEADERS, timeout=120,
                       json={"model": model, "input": "a container serves this"})
    assert reply.status_code == 200, reply.text
    return reply.json()["data"][0]["embedding"]


def _wait_serving(endpoint: str, model: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = httpx.get(f"{endpoint}/v1/models/{model}", headers=HEADERS, timeout=10)
        if reply.status_code == 200 and reply.json()["status"] == "ready":
            return
        time.sleep(0.5)
    raise TimeoutError(reply.text)


def test_a_container_serves_a_model_and_keeps_it_across_a_restart(container):
    name, endpoint = container
    _wait_ready(endpoint, name)
    # Keys are on: the image starts on every interface only with one.
    assert httpx.get(f"{endpoint}/v1/models", timeout=10).status_code == 401
    registered = httpx.post(f"{endpoint}/v1/model_registrations/embedding", headers=HEADERS,
                            timeout=30, json={"model": MINILM_GGUF_FAMILY, "persist": True})
    assert registered.status_code == 200, registered.text
    launched = httpx.post(f"{endpoint}/v1/models", headers=HEADERS, timeout=300,
                          json={"model_name": "minilm-gguf", "model_type": "embedding"})
    assert launched.status_code == 200, launched.text
    uid = launched.json()["model_uid"]
    assert httpx.get(f"{endpoint}/v1/models/{uid}", headers=HEADERS,
                     timeout=10).json()["model_engine"] == "llama.cpp"
    before = _embedding(endpoint, uid)
    assert len(before) == 384

    podman("restart", "-t", "30", name, timeout=120)
    _wait_ready(endpoint, name)
    _wait_serving(endpoint, uid)
    after = _embedding(endpoint, uid)
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) < 1e-4
    # The container ran as Fleet's user, not root, and the image's HEALTHCHECK finds it healthy.
    assert podman("exec", name, "id", "-u").stdout.strip() == "1000"
    assert podman("healthcheck", "run", name, check=False).returncode == 0


def test_the_image_refuses_to_serve_on_every_interface_without_keys(image):
    """Its default command listens on 0.0.0.0; without FLEET_API_KEY it exits, saying why."""
    done = podman("run", "--rm", image, check=False, timeout=120)
    assert done.returncode != 0
    assert "refusing to serve on 0.0.0.0 without API keys" in done.stderr + done.stdout
