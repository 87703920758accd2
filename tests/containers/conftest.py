"""What the container tests share: Fleet's image without PyTorch (EXTRAS=llama-cpp: PyPI's
torch is a CUDA build of several GB), and a model folder with MiniLM as GGUF, served on
llama.cpp, to mount read-only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.containers.images import fleet_image
from tests.gguf_builders import minilm_gguf

KEY = "sk-container-test-key-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}
# A custom embedding family whose weights are the mounted folder's GGUF file.
MINILM_GGUF_FAMILY = {
    "model_name": "minilm-gguf", "dimensions": 384, "max_tokens": 256, "language": ["en"],
    "model_specs": [{"model_format": "gguf", "quantizations": ["F32"],
                     "model_uri": "/models/minilm.gguf"}],
}


@pytest.fixture(scope="session")
def image() -> str:
    return fleet_image({"EXTRAS": "llama-cpp"})


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """Readable by the image's user (uid 1000), mounted read-only."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(minilm_gguf(), folder / "minilm.gguf")
    folder.chmod(0o755)
    (folder / "minilm.gguf").chmod(0o644)
    return folder
