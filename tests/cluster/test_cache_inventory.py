"""A worker's weights cache: listing (sizes, files, what the catalogue says it holds), hostile
model_version values, refusal while a replica reads an entry, removal; and the supervisor's
view over several workers' caches (fleet.cluster.supervisor.cache_admin)."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import pytest

from fleet.catalogue.registry import Catalogue, builtin_families
from fleet.cluster.supervisor import cache_admin
from fleet.cluster.supervisor.records import WorkerRecord
from fleet.cluster.weights import download
from fleet.cluster.weights.cache_inventory import WorkerCache, check_model_version, scan
from fleet.engines.launch_options import SentenceTransformersEmbeddingOptions
from fleet.errors import BadRequest, Conflict, NotFound
from fleet.messages import ReplicaLaunch
from tests.cache_builders import MINILM, fake_download, minilm_family, model_file_count, tree_bytes


def fake_download_here(home: Path, minilm_path: str) -> Path:
    """The fake download, found by download.py itself where it looks (FLEET_HOME is `home`)."""
    target = fake_download(home, minilm_path)
    family, spec = minilm_family()
    assert download.cached_weights(family, spec, "none") == target
    return target


def launch_payload(uid: str, model_path: str | None = None) -> ReplicaLaunch:
    family, spec = minilm_family()
    return ReplicaLaunch(model_uid=uid, family=family, spec=spec, quantization="none",
                         model_engine="sentence_transformers",
                         engine_options=SentenceTransformersEmbeddingOptions(),
                         model_path=model_path)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.mark.parametrize("value", ["", "  ", ".", "..", "../x", "/etc", "a/b", "a\\b", ".hidden",
                                   "x\x00y", "line\nbreak", "v" * 256])
def test_model_versions_that_name_other_paths_are_refused(value):
    with pytest.raises(BadRequest) as caught:
        check_model_version(value)
    assert caught.value.status_code == 400


def test_plain_folder_names_are_accepted():
    for value in (f"{MINILM}-pytorch", "qwen2.5-instruct-pytorch-0.5", "a..b", "smol-gguf-Q4_K_M"):
        assert check_model_version(value) == value


def test_listing_sizes_files_and_catalogue_fields(home, minilm_path):
    target = fake_download_here(home, minilm_path)
    partial = target.parent / "qwen2.5-instruct-pytorch-7"
    partial.mkdir()
    (partial / "model-00001-of-00004.safetensors.incomplete").write_bytes(b"x" * 100)
    (target.parent / ".removing-old-1234").mkdir()  # a removal in progress: not an entry
    (target.parent / "stray.txt").write_text("not a folder")
    known = cache_admin.known_versions(Catalogue())

    entries = {e["model_version"]: e for e in scan(target.parent, known)}

    assert sorted(entries) == [f"{MINILM}-pytorch", "qwen2.5-instruct-pytorch-7"]
    entry = entries[f"{MINILM}-pytorch"]
    assert entry["model_name"] == MINILM and entry["model_type"] == "embedding"
    assert entry["model_format"] == "pytorch" and entry["quantization"] == "none"
    assert entry["path"] == str(target) and entry["real_path"] is None
    assert entry["size_bytes"] == tree_bytes(target) > 90_000_000
    # Bookkeeping (the marker, huggingface_hub's metadata) is sized but not a model file.
    assert entry["file_count"] == model_file_count(minilm_path)
    assert entry["complete"] is True and entry["known"] is True
    assert "sentence_transformers" in entry["model_engine"]
    incomplete = entries["qwen2.5-instruct-pytorch-7"]
    assert incomplete["complete"] is False and incomplete["size_bytes"] == 100
    assert incomplete["model_size_in_billions"] == 7
    assert [e["model_version"] for e in scan(target.parent, known, MINILM)] == [target.name]


def test_an_unknown_folder_is_listed_by_its_name(home):
    folder = home / "cache" / "hand-made"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"12345")
    [entry] = scan(home / "cache", {})
    assert entry["model_name"] == "hand-made" and entry["model_format"] is None
    assert entry["known"] is False and entry["size_bytes"] == 5 and entry["file_count"] == 1


def test_gguf_folders_are_known_per_quantization(home):
    catalogue = Catalogue()
    known = cache_admin.known_versions(catalogue)
    family = builtin_families("LLM")["smollm2-instruct"]
    spec = next(s for s in family.model_specs if s.model_format == "gguf")
    for quantization in spec.quantizations:
        name = download.cache_folder(family, spec, quantization).name
        assert known[name]["quantization"] == quantization
        assert known[name]["model_format"] == "gguf"


def test_an_entry_in_use_is_refused_until_its_replica_ends(home, minilm_path):
    target = fake_download_here(home, minilm_path)
    cache = WorkerCache()
    cache.track("embed-0:abc", launch_payload("embed"))
    assert cache.probe(target.name) == {"path": str(target), "in_use_by": ["embed"]}
    with pytest.raises(Conflict) as caught:
        asyncio.run(cache.remove(target.name))
    assert caught.value.status_code == 409 and "embed" in caught.value.message
    assert (target / "model.safetensors").is_file()

    cache.untrack("embed-0:abc")
    removed = asyncio.run(cache.remove(target.name))
    assert removed["path"] == str(target) and removed["in_use_by"] == []
    assert not target.exists()
    assert list((home / "cache").iterdir()) == []  # no tombstone left behind
    with pytest.raises(NotFound):
        asyncio.run(cache.remove(target.name))


def test_force_removes_an_entry_in_use(home, minilm_path):
    target = fake_download_here(home, minilm_path)
    cache = WorkerCache()
    cache.track("embed-0:abc", launch_payload("embed"))
    assert asyncio.run(cache.remove(target.name, force=True))["in_use_by"] == ["embed"]
    assert not target.exists()


def test_a_model_path_counts_as_a_user_only_inside_the_entry(home, minilm_path):
    target = fake_download_here(home, minilm_path)
    cache = WorkerCache()
    cache.track("outside-0:a", launch_payload("outside", model_path=minilm_path))
    assert cache.users(target) == []
    cache.track("inside-0:b", launch_payload("inside", model_path=str(target / "1_Pooling")))
    assert cache.users(target) == ["inside"]


def test_a_linked_entry_loses_its_link_not_its_target(home, tmp_path):
    source = tmp_path / "my-weights"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"keep me")
    (home / "cache").mkdir(parents=True)
    link = home / "cache" / "linked"
    link.symlink_to(source)
    [entry] = scan(home / "cache", {})
    assert entry["real_path"] == str(source) and entry["size_bytes"] == 7
    asyncio.run(WorkerCache().remove("linked"))
    assert not os.path.lexists(link) and (source / "weights.bin").read_bytes() == b"keep me"


class _WorkerRef:
    """Stands in for a worker's xoscar actor ref, in front of a real WorkerCache."""

    def __init__(self, address: str, cache: WorkerCache):
        self.address, self.cache = address, cache

    async def cached_models(self, known: dict, model_name: str | None = None) -> list[dict]:
        return await self.cache.list(self.address, known, model_name)

    async def cache_probe(self, model_version: str) -> dict:
        return self.cache.probe(model_version)

    async def remove_cache(self, model_version: str, force: bool = False) -> dict:
        return await self.cache.remove(model_version, force)


def test_the_supervisor_lists_and_removes_per_worker(home, tmp_path, minilm_path):
    target = fake_download_here(home, minilm_path)
    other_root = tmp_path / "other-cache"
    shutil.copytree(target, other_root / target.name)
    caches = [WorkerCache(), WorkerCache(other_root)]
    workers = [WorkerRecord(address=f"10.0.0.{i}:5000", ref=_WorkerRef(f"10.0.0.{i}:5000", c),
                            resources={}) for i, c in enumerate(caches, start=1)]
    caches[1].track("embed-0:x", launch_payload("embed", model_path=str(other_root / target.name)))
    catalogue = Catalogue()

    listing = asyncio.run(cache_admin.list_cached(workers, catalogue, None, None))
    by_worker = {e["actor_ip_address"]: e for e in listing["list"]}
    assert sorted(by_worker) == ["10.0.0.1:5000", "10.0.0.2:5000"]
    assert by_worker["10.0.0.2:5000"]["in_use_by"] == ["embed"]
    assert by_worker["10.0.0.1:5000"]["in_use_by"] == []
    one = asyncio.run(cache_admin.list_cached(workers, catalogue, None, "10.0.0.1"))["list"]
    assert [e["actor_ip_address"] for e in one] == ["10.0.0.1:5000"]
    with pytest.raises(BadRequest, match="no worker at 10.9.9.9"):
        asyncio.run(cache_admin.list_cached(workers, catalogue, None, "10.9.9.9"))

    # In use on one worker: refused as a whole, nothing deleted anywhere.
    with pytest.raises(Conflict, match="10.0.0.2:5000"):
        asyncio.run(cache_admin.remove(workers, target.name, None, False))
    assert target.exists() and (other_root / target.name).exists()
    # The free worker alone can be cleared.
    done = asyncio.run(cache_admin.remove(workers, target.name, "10.0.0.1:5000", False))
    assert [r["actor_ip_address"] for r in done["removed"]] == ["10.0.0.1:5000"]
    assert not target.exists() and (other_root / target.name).exists()
    plan = asyncio.run(cache_admin.deletable(workers, target.name, None))
    assert plan["paths"] == [str(other_root / target.name)] and plan["in_use_by"] == ["embed"]
    with pytest.raises(BadRequest):
        asyncio.run(cache_admin.deletable(workers, "../x", None))
