"""What the container tests share: Fleet's image without PyTorch (EXTRAS=llama-cpp: PyPI's
torch is a CUDA build of several GB), and a model folder with MiniLM as GGUF, served on
llama.cpp, to mount read-only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.containers.images import fleet_image, is_built
from tests.gguf_builders import minilm_gguf

KEY = "sk-container-test-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}
# A custom embedding family whose weights are the mounted folder's GGUF file.
MINILM_GGUF_FAMILY = {
    "model_name": "minilm-gguf", "dimensions": 384, "max_tokens": 256, "language": ["en"],
    "model_specs": [{"model_format": "gguf", "quantizations": ["F32"],
                     "model_uri": "/models/minilm.gguf"}],
}


IMAGE_ARGS = {"EXTRAS": "llama-cpp"}
# A cold start makes the base with debootstrap and builds the image: 3 to 5 minutes on 2 busy
# cores, inside the first test that asks for the image, where it would count against the
# suite's per-test timeout (pyproject.toml). That one test gets this much more.
COLD_BUILD_S = 1800


@pytest.hookimpl(trylast=True)  # after `-m` and `-k` have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = next((item for item in items if "image" in getattr(item, "fixturenames", ())), None)
    if first is None or not shutil.which("podman") or is_built(IMAGE_ARGS):
        return
    first.add_marker(pytest.mark.timeout(float(config.getini("timeout")) + COLD_BUILD_S))


@pytest.fixture(scope="session")
def image() -> str:
    return fleet_image(IMAGE_ARGS)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """Readable by the image's user (uid 1000), mounted read-only."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(minilm_gguf(), folder / "minilm.gguf")
    folder.chmod(0o755)
    (folder / "minilm.gguf").chmod(0o644)
    return folder
