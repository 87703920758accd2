"""Where a model's weights come from: a local path, or the hub into FLEET_HOME/cache.

Downloads run inside the model's own process, so terminating a launch kills the download with
it, and huggingface_hub resumes a partial download on the next launch."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.errors import BadRequest, LaunchFailed
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


def local_weights(model_path: str | None, spec: ModelSpec) -> Path | None:
    source = model_path or spec.model_uri
    if not source:
        return None
    path = path_from_uri(source)
    if not path.exists():
        raise BadRequest(f"model path {str(path)!r} does not exist on this worker")
    return path


def gguf_file(path: Path, spec: ModelSpec, quantization: str) -> Path:
    """A GGUF model is one file; a folder given for it must say which one it holds."""
    if spec.model_format != "gguf" or not path.is_dir():
        return path
    if spec.model_file_name_template:
        named = path / spec.model_file_name_template.format(quantization=quantization)
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
    parts = [family.model_name, spec.model_format, spec.size_label]
    if spec.model_format == "gguf":
        parts.append(quantization)
    return cache_dir() / "-".join(p for p in parts if p and p != "-")


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


class _ProgressTqdm:
    """A tqdm stand-in that reports bytes downloaded to a callback; huggingface_hub accepts any
    tqdm-like class."""

    callback: ProgressCallback | None = None

    def __init__(self, *args, total: float | None = None, initial: float = 0, **kwargs):
        self.total = total or 0
        self.n = initial or 0

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.callback and self.total:
            self.callback(min(1.0, self.n / self.total))

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        return None

    def set_description(self, *args, **kwargs) -> None:
        return None

    def refresh(self) -> None:
        return None


def download_from_hub(
    family: BaseFamily, spec: ModelSpec, quantization: str, progress: ProgressCallback
) -> Path:
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
    from huggingface_hub import hf_hub_download, snapshot_download

    target = cache_folder(family, spec, quantization)
    progress_class = type("FleetProgress", (_ProgressTqdm,), {"callback": staticmethod(progress)})
    try:
        if spec.model_format == "gguf" and spec.model_file_name_template:
            filename = spec.model_file_name_template.format(quantization=quantization)
            return Path(
                hf_hub_download(
                    spec.model_id, filename, revision=spec.model_revision, local_dir=target
                )
            )
        snapshot_download(
            spec.model_id,
            revision=spec.model_revision,
            local_dir=target,
            tqdm_class=progress_class,
        )
    except Exception as exc:  # the hub library raises many types; the user needs the message
        raise LaunchFailed(f"download of {spec.model_id} failed: {exc}") from None
    return target


def cached_weights(family: BaseFamily, spec: ModelSpec, quantization: str) -> Path | None:
    """A complete earlier download of these weights in the cache, or None."""
    cached = cache_folder(family, spec, quantization)
    if not (cached / COMPLETE_MARKER).exists():
        return None
    if spec.model_format == "gguf" and spec.model_file_name_template:
        return cached / spec.model_file_name_template.format(quantization=quantization)
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
