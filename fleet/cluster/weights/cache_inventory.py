"""One worker's weights cache (FLEET_HOME/cache): what it holds, what running replicas read,
and removing an entry.

An entry is one top-level folder that fleet.cluster.weights.download wrote
(`<model_name>-<format>[-<size>][-<quantization>]`), and its folder name is its
`model_version`: unique on the worker, stable across restarts, and the exact thing a removal
deletes. Since a model_version names a path, it is checked to be one plain folder name before
it is joined to the cache root.

Walking folder trees and deleting them is blocking disk work: it runs in a thread
(asyncio.to_thread), never on the worker's event loop, which also carries heartbeats."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from fleet.cluster.weights.download import COMPLETE_MARKER, cache_folder, path_from_uri
from fleet.errors import BadRequest, Conflict, NotFound
from fleet.messages import ReplicaLaunch
from fleet.settings import cache_dir

logger = logging.getLogger(__name__)

# Bookkeeping inside an entry, left out of its file count (still in its size: removal frees it):
# Fleet's completion marker and huggingface_hub's per-file download metadata.
_BOOKKEEPING = frozenset({COMPLETE_MARKER, ".cache"})
# Removal first renames the entry to a hidden name (one atomic step), so that a launch never
# finds a half-deleted folder; hidden names are never entries.
_TOMBSTONE_PREFIX = ".removing-"
MAX_MODEL_VERSION = 255
# One folder name, neither hidden nor starting with a space (in the API's document too, as the
# query parameter's pattern): no separators, no control characters.
MODEL_VERSION_PATTERN = r"^[^.\s/\\\x00-\x1f\x7f][^/\\\x00-\x1f\x7f]*$"
_MODEL_VERSION = re.compile(MODEL_VERSION_PATTERN)


def check_model_version(model_version: str | None) -> str:
    """A model_version must be one plain folder name: `..`, absolute paths, separators, control
    characters and hidden names are refused with a 400 (they would name a path elsewhere)."""
    if not model_version:
        raise BadRequest("model_version is required", code="invalid_model_version")
    if len(model_version) > MAX_MODEL_VERSION or not _MODEL_VERSION.fullmatch(model_version):
        raise BadRequest(f"invalid model_version {model_version!r}: it must be one cache folder "
                         "name, as `fleet cached` lists it", code="invalid_model_version")
    return model_version


def _present(path: Path) -> bool:
    """Whether the entry exists. A name of more bytes than the file system takes (255
    characters may be 1020 bytes) names nothing, rather than failing the stat."""
    try:
        return path.is_symlink() or path.exists()
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return False
        raise


def entry_path(model_version: str, root: Path | None = None) -> Path:
    """The entry's folder, known to lie directly under the cache root."""
    root = root or cache_dir()
    path = root / check_model_version(model_version)
    if path.parent != root:  # cannot happen after the check; kept as the last line of defence
        raise BadRequest(f"invalid model_version {model_version!r}", code="invalid_model_version")
    return path


def _folder_stats(path: Path) -> tuple[int, int]:
    """(bytes, model files) of the regular files below `path`, links inside not followed: the
    bytes that removing it frees (for an entry that is itself a link, its target's, which
    removal keeps). Bookkeeping is sized but not counted as a model file. Blocking."""
    size = files = 0
    for folder, _, names in os.walk(path):
        relative = Path(folder).relative_to(path)
        bookkeeping = relative.parts[:1] == (".cache",)
        for name in names:
            file = Path(folder, name)
            if file.is_symlink():
                continue
            size += file.lstat().st_size
            if not bookkeeping and not (relative == Path() and name in _BOOKKEEPING):
                files += 1
    return size, files


def _describe(path: Path, known: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One entry in Xinference's cached-model shape plus Fleet's fields. Blocking."""
    meta = known.get(path.name) or {}
    size, files = _folder_stats(path)
    return {
        # Xinference's fields (`xinference cached` prints every key of the first entry)
        "model_name": meta.get("model_name", path.name),
        "model_type": meta.get("model_type"),
        "model_engine": meta.get("model_engine"),
        "model_size_in_billions": meta.get("model_size_in_billions"),
        "model_format": meta.get("model_format"),
        "quantization": meta.get("quantization"),
        "model_version": path.name,
        "path": str(path),
        # Only a linked entry has one (a symlinked FLEET_HOME does not make every entry one).
        "real_path": str(path.resolve()) if path.is_symlink() else None,
        "size_bytes": size,
        # Fleet's fields
        "file_count": files,
        "complete": (path / COMPLETE_MARKER).exists(),
        "known": bool(meta),
    }


def scan(root: Path, known: dict[str, dict[str, Any]],
         model_name: str | None = None) -> list[dict[str, Any]]:
    """Every entry under `root` (complete or partial downloads), sorted by name. Blocking."""
    if not root.is_dir():
        return []
    entries = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        if model_name and known.get(path.name, {}).get("model_name", path.name) != model_name:
            continue
        try:
            entries.append(_describe(path, known))
        except OSError as exc:  # removed while we looked, or unreadable: say so, go on
            logger.warning("cache entry %s: %s", path, exc)
    return entries


def replica_weights(launch: ReplicaLaunch) -> Path | None:
    """Where a replica's weights come from on this worker: its local path, or the cache folder
    its download goes to. None when that cannot be told (it is then never counted as a user)."""
    try:
        source = launch.model_path or launch.spec.model_uri
        if source:
            return path_from_uri(source).resolve()
        return cache_folder(launch.family, launch.spec, launch.quantization).resolve()
    except (BadRequest, ValueError, OSError) as exc:
        logger.warning("cannot tell where replica weights come from: %s", exc)
        return None


class WorkerCache:
    """A worker's cache and the replicas reading from it: the worker tracks each replica's
    weights from the moment its process exists until it ends."""

    def __init__(self, root: Path | None = None):
        self._root = root
        self._readers: dict[str, tuple[str, Path]] = {}  # replica key -> (model uid, weights)

    @property
    def root(self) -> Path:
        return self._root or cache_dir()

    def track(self, replica_key: str, launch: ReplicaLaunch) -> None:
        weights = replica_weights(launch)
        if weights is not None:
            self._readers[replica_key] = (launch.model_uid, weights)

    def untrack(self, replica_key: str) -> None:
        self._readers.pop(replica_key, None)

    def users(self, entry: Path) -> list[str]:
        """Model uids whose replicas read from the entry (or from a path inside it)."""
        real = entry.resolve()
        return sorted({uid for uid, weights in self._readers.values()
                       if weights == real or real in weights.parents})

    async def list(self, address: str, known: dict[str, dict[str, Any]],
                   model_name: str | None = None) -> list[dict[str, Any]]:
        entries = await asyncio.to_thread(scan, self.root, known, model_name)
        for entry in entries:
            entry["in_use_by"] = self.users(Path(entry["path"]))
            entry["actor_ip_address"] = address
        return entries

    def probe(self, model_version: str) -> dict[str, Any]:
        """The entry's path (None when this worker has no such entry) and its users."""
        path = entry_path(model_version, self.root)
        exists = _present(path)
        return {"path": str(path) if exists else None,
                "in_use_by": self.users(path) if exists else []}

    async def remove(self, model_version: str, force: bool = False) -> dict[str, Any]:
        """Delete the entry; refused (409) while a replica reads it, unless forced."""
        path = entry_path(model_version, self.root)
        if not _present(path):
            raise NotFound(f"no cached model {model_version!r} in {self.root}",
                           code="cache_not_found")
        users = self.users(path)
        if users and not force:
            raise Conflict(f"cached model {model_version!r} is in use by {', '.join(users)}; "
                           "terminate it first, or force the removal", code="cache_in_use")
        # Checked and renamed with no await in between: a launch on this worker (same event
        # loop) sees either the whole entry or none of it.
        tombstone = path.with_name(f"{_TOMBSTONE_PREFIX}{path.name}-{uuid.uuid4().hex[:8]}")
        path.rename(tombstone)
        if users:
            logger.warning("removing cached %s although %s use it (forced)", path, users)
        await asyncio.to_thread(_delete, tombstone)
        logger.info("removed cached model %s", path)
        return {"model_version": model_version, "path": str(path), "in_use_by": users}


def _delete(path: Path) -> None:
    """A linked entry loses only its link, never what it points to. Blocking."""
    if path.is_symlink() or not path.is_dir():
        path.unlink()
    else:
        shutil.rmtree(path)
