"""Where a model's weights come from: a local path, or the hub into FLEET_HOME/cache.

Downloads run inside the model's own process, so terminating a launch kills the download with
it, and huggingface_hub resumes a partial download on the next launch."""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from fleet.catalogue.safe_names import cache_folder_name
from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.errors import BadRequest, LaunchFailed
from fleet.install_hint import pip_install_extra
from fleet.paths import inside
from fleet.settings import cache_dir

ProgressCallback = Callable[[float], None]

_HUB_PROBE_TIMEOUT_S = 3.0
# Written into a cache folder once its download finished: a folder without it is partial.
COMPLETE_MARKER = ".fleet-complete"


def path_from_uri(uri: str) -> Path:
    """`file:///x/y` and plain paths alike; other schemes are refused."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri).expanduser()
    raise BadRequest(f"model_uri {uri!r}: only local paths and file:// URIs are supported")


def package_weights(spec: ModelSpec) -> Path | None:
    """The folder of the pip package that carries the spec's weights (`model_package`)."""
    if not spec.model_package:
        return None
    found = importlib.util.find_spec(spec.model_package)
    if found is None or not found.submodule_search_locations:
        raise LaunchFailed(f"the weights come with the Python package {spec.model_package}, "
                           "which is not installed on this worker: "
                           f"{pip_install_extra('image')}")
    return Path(next(iter(found.submodule_search_locations)))


def local_weights(model_path: str | None, spec: ModelSpec) -> Path | None:
    source = model_path or spec.model_uri
    if not source:
        return package_weights(spec)
    path = path_from_uri(source)
    if not path.exists():
        raise BadRequest(f"model path {str(path)!r} does not exist on this worker")
    return path


def gguf_file(path: Path, spec: ModelSpec, quantization: str) -> Path:
    """A GGUF model is one file; a folder given for it must say which one it holds."""
    if spec.model_format != "gguf" or not path.is_dir():
        return path
    if spec.model_file_name_template:
        named = inside(path, spec.model_file_name_template.format(quantization=quantization))
        if named.is_file():
            return named
    files = sorted(path.glob("*.gguf"))
    # A model split over several files loads from its first part.
    firsts = [f for f in files if "-00001-of-" in f.name]
    if len(files) == 1:
        return files[0]
    if len(firsts) == 1:
        return firsts[0]
    found = ", ".join(f.name for f in files) or "none"
    raise BadRequest(f"{str(path)!r} must hold one GGUF file for quantization {quantization} "
                     f"(found: {found}); pass the file itself as the model path")


def cache_folder(family: BaseFamily, spec: ModelSpec, quantization: str) -> Path:
    # The parts were checked when the spec was read (fleet.catalogue.safe_names); the folder
    # is still checked to stay under the cache root.
    return inside(cache_dir(), cache_folder_name(family.model_name, spec.model_format,
                                                 spec.size_label, quantization))


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def check_hub_reachable() -> None:
    """Fail in seconds, not minutes, when the hub cannot be reached (offline or firewalled)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ConnectionError("HF_HUB_OFFLINE is set")
    parsed = urlparse(_hub_endpoint())
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=_HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"cannot connect to {parsed.hostname}:{port} ({exc})") from None


# A diffusers repository holds the pipeline's folders (unet/, vae/, text_encoder/...) and often
# the same weights again: fp16/bf16 variants beside them, a single-file checkpoint of several GB
# at the top, .bin, .ckpt, ONNX or Flax copies. The pipeline loads only the folders' full-precision
# safetensors (cast to the launch's dtype), so only those and the configs come down.
DIFFUSERS_ALLOW = ("model_index.json", "*/*")
DIFFUSERS_IGNORE = ("*.fp16.*", "*.bf16.*", "*non_ema*", "*.ckpt", "*.bin", "*.onnx", "*.onnx_data",
                    "*.msgpack", "*.pb", "*.mlmodelc/*", "*.pt")


def hub_patterns(family: BaseFamily) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """(allow, ignore) patterns of a whole-repository download; None: everything."""
    # One model of a repository that holds many (a Piper voice of rhasspy/piper-voices).
    files = getattr(family, "hub_files", None)
    if files:
        return tuple(files), None
    if family.model_type == "image" and "ocr" not in family.abilities:
        return DIFFUSERS_ALLOW, DIFFUSERS_IGNORE
    return None, None


def _expected_bytes(repo_id: str, revision: str | None, filename: str | None,
                    family: BaseFamily | None = None) -> int | None:
    """The size of what a download will write: one file, or the repository's files that
    `hub_patterns` lets through."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils import filter_repo_objects

    try:
        entries = HfApi().list_repo_tree(repo_id, revision=revision, recursive=True)
        sizes = {e.path: getattr(e, "size", 0) or 0 for e in entries}
    except Exception:  # progress is a nicety: the download itself reports real failures
        return None
    if filename:
        return sizes.get(filename) or None
    allow, ignore = hub_patterns(family) if family is not None else (None, None)
    kept = filter_repo_objects(list(sizes), allow_patterns=None if allow is None else list(allow),
                               ignore_patterns=None if ignore is None else list(ignore))
    return sum(sizes[path] for path in kept) or None


class _FolderWatcher:
    """Reports a download's progress as the bytes under its target folder against the size the
    hub announced. Watching the disk works the same with every huggingface_hub release (their
    progress-bar hooks change from one to the next) and counts a resumed download's bytes."""

    def __init__(self, folder: Path, total: int | None, progress: ProgressCallback):
        self._folder, self._total, self._progress = folder, total, progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fleet-download-progress", daemon=True)

    def __enter__(self) -> _FolderWatcher:
        if self._total:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _on_disk(self) -> int:
        done = 0
        for path in self._folder.rglob("*"):
            try:
                done += path.stat().st_size if path.is_file() else 0
            except OSError:  # a part renamed while we looked
                pass
        return done

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._progress(min(0.99, self._on_disk() / (self._total or 1)))


def _reachable_hub(family: BaseFamily, spec: ModelSpec) -> str:
    """The spec's repository id, once the hub is known to answer; the reason it cannot be
    downloaded otherwise."""
    if not spec.model_id:
        raise BadRequest(
            f"{family.model_name} names no hub repository; launch it with --model-path"
        )
    try:
        check_hub_reachable()
    except ConnectionError as exc:
        raise LaunchFailed(
            f"cannot download {spec.model_id} from {_hub_endpoint()}: {exc}. "
            "Download the weights on a machine with access and launch with "
            "--model-path /path/to/weights (model_path in the API)."
        ) from None
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # the replica's log is no terminal; progress goes to the launch
    return spec.model_id


def download_hub_file(family: BaseFamily, spec: ModelSpec, filename: str, target: Path,
                      progress: ProgressCallback) -> Path:
    """One file of the spec's repository (a GGUF quantization, a vision projector) into
    `target`, resumed where an earlier try stopped."""
    model_id = _reachable_hub(family, spec)
    from huggingface_hub import hf_hub_download

    try:
        total = _expected_bytes(model_id, spec.model_revision, filename)
        with _FolderWatcher(target, total, progress):
            return Path(hf_hub_download(model_id, filename, revision=spec.model_revision,
                                        local_dir=target))
    except Exception as exc:  # the hub library raises many types; the user needs the message
        raise LaunchFailed(f"download of {filename} from {model_id} failed: {exc}") from None


def download_from_hub(
    family: BaseFamily, spec: ModelSpec, quantization: str, progress: ProgressCallback
) -> Path:
    target = cache_folder(family, spec, quantization)
    if spec.model_format == "gguf" and spec.model_file_name_template:
        filename = spec.model_file_name_template.format(quantization=quantization)
        return download_hub_file(family, spec, filename, target, progress)
    model_id = _reachable_hub(family, spec)
    from huggingface_hub import snapshot_download

    try:
        total = _expected_bytes(model_id, spec.model_revision, None, family)
        with _FolderWatcher(target, total, progress):
            allow, ignore = hub_patterns(family)
            snapshot_download(model_id, revision=spec.model_revision, local_dir=target,
                              allow_patterns=None if allow is None else list(allow),
                              ignore_patterns=None if ignore is None else list(ignore))
    except Exception as exc:  # the hub library raises many types; the user needs the message
        raise LaunchFailed(f"download of {model_id} failed: {exc}") from None
    return target


def cached_weights(family: BaseFamily, spec: ModelSpec, quantization: str) -> Path | None:
    """A complete earlier download of these weights in the cache, or None."""
    cached = cache_folder(family, spec, quantization)
    if not (cached / COMPLETE_MARKER).exists():
        return None
    if spec.model_format == "gguf" and spec.model_file_name_template:
        return inside(cached, spec.model_file_name_template.format(quantization=quantization))
    return cached


def resolve_weights(
    family: BaseFamily,
    spec: ModelSpec,
    quantization: str,
    model_path: str | None,
    progress: ProgressCallback,
) -> Path:
    local = local_weights(model_path, spec)
    if local is not None:
        return gguf_file(local, spec, quantization)
    cached = cached_weights(family, spec, quantization)
    if cached is not None:
        return cached
    path = download_from_hub(family, spec, quantization, progress)
    complete = cache_folder(family, spec, quantization) / COMPLETE_MARKER
    complete.parent.mkdir(parents=True, exist_ok=True)
    complete.touch()
    return path
