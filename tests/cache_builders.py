"""A download in a worker's weights cache, built without a hub: MiniLM's real files where
fleet.cluster.weights.download puts all-MiniLM-L6-v2, as huggingface_hub leaves a `local_dir` download
(its `.cache` metadata) and Fleet marks it complete."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fleet.catalogue.registry import builtin_families
from fleet.cluster.weights import download

MINILM = "all-MiniLM-L6-v2"


def minilm_family() -> tuple[Any, Any]:
    family = builtin_families("embedding")[MINILM]
    return family, family.model_specs[0]


def fake_download(home: Path, minilm_path: str) -> Path:
    """The cache folder under `home` (a FLEET_HOME) holding MiniLM, complete."""
    family, spec = minilm_family()
    target = home / "cache" / download.cache_folder(family, spec, "none").name
    shutil.copytree(minilm_path, target)
    meta = target / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "model.safetensors.metadata").write_text("abc123\n")
    (target / download.COMPLETE_MARKER).touch()
    return target


def tree_bytes(path: Path) -> int:
    """Bytes of every file below `path`: what removing it frees."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def model_file_count(minilm_path: str) -> int:
    return sum(1 for p in Path(minilm_path).rglob("*") if p.is_file())
