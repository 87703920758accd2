from __future__ import annotations

import socket
import time

import pytest

from fleet.catalogue.registry import builtin_families
from fleet.cluster.weights import download
from fleet.errors import BadRequest, LaunchFailed


def _family_and_spec():
    family = builtin_families("embedding")["all-MiniLM-L6-v2"]
    return family, family.model_specs[0]


def test_local_path_and_file_uri_are_used_as_they_are(tmp_path):
    family, spec = _family_and_spec()
    never = lambda fraction: pytest.fail("no download expected")  # noqa: E731
    assert download.resolve_weights(family, spec, "none", str(tmp_path), never) == tmp_path
    assert download.resolve_weights(family, spec, "none", f"file://{tmp_path}", never) == tmp_path
    with pytest.raises(BadRequest, match="does not exist"):
        download.resolve_weights(family, spec, "none", str(tmp_path / "nope"), never)
    with pytest.raises(BadRequest, match="file://"):
        download.path_from_uri("s3://bucket/model")


def test_unreachable_hub_fails_fast_and_names_model_path(monkeypatch, tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    family, spec = _family_and_spec()
    with pytest.raises(LaunchFailed) as caught:
        download.resolve_weights(family, spec, "none", None, lambda f: None)
    assert "--model-path" in caught.value.message
    assert spec.model_id in caught.value.message


def test_offline_setting_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="HF_HUB_OFFLINE"):
        download.check_hub_reachable()


def test_reachable_endpoint_passes_the_probe(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        download.check_hub_reachable()


def test_progress_is_the_bytes_on_disk_against_the_announced_size(tmp_path):
    seen: list[float] = []
    with download._FolderWatcher(tmp_path, 400, seen.append):
        (tmp_path / ".cache").mkdir()
        (tmp_path / ".cache" / "model.safetensors.incomplete").write_bytes(b"x" * 100)
        deadline = time.monotonic() + 5
        while not seen or seen[-1] < 0.25:
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        (tmp_path / "config.json").write_bytes(b"x" * 400)
        while seen[-1] < 0.99:
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
    assert seen[0] == 0.25 and seen[-1] == 0.99  # 1.0 is the launch's word, once loaded
    count = len(seen)
    time.sleep(0.4)
    assert len(seen) == count  # the watcher stopped with the download


def test_cache_folder_is_under_fleet_home(monkeypatch, tmp_path):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    family, spec = _family_and_spec()
    assert download.cache_folder(family, spec, "none").parent == tmp_path / "cache"


def test_a_folder_given_for_gguf_weights_resolves_to_its_file(tmp_path):
    family = builtin_families("LLM")["smollm2-instruct"]
    spec = next(s for s in family.model_specs if s.model_format == "gguf")
    never = lambda fraction: pytest.fail("no download expected")  # noqa: E731
    named = tmp_path / spec.model_file_name_template.format(quantization="Q8_0")
    other = tmp_path / "notes.gguf"
    named.write_bytes(b"GGUF")
    other.write_bytes(b"GGUF")
    # The catalogue's file name for the quantization wins; a file path is taken as it is.
    assert download.resolve_weights(family, spec, "Q8_0", str(tmp_path), never) == named
    assert download.resolve_weights(family, spec, "Q4_1", str(other), never) == other
    with pytest.raises(BadRequest, match="notes.gguf"):  # two files, neither named for Q4_1
        download.resolve_weights(family, spec, "Q4_1", str(tmp_path), never)
    named.unlink()
    assert download.resolve_weights(family, spec, "Q4_1", str(tmp_path), never) == other
