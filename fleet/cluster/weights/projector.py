"""The vision projector of a GGUF model (llama.cpp's mmproj file): which one a launch loads, and
where it is, downloaded beside the weights when they came from the hub.

A GGUF repository of a vision model holds the language model's quantizations and, beside them,
one or more projector files (the same image encoder in f16, f32...), which its spec lists as
`multimodal_projectors`. A launch names one with the `multimodal_projector` option (Xinference's
name): a file name, looked for in the weights' folder (the launch's model_path, or the cache
folder of a download), or a local file's absolute path, which the launch policy checks like a
model_path. A vision family's launch that names none gets the spec's first projector; "" asks
for none (the model then reads text only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.cluster.weights.download import (
    ProgressCallback,
    cache_folder,
    download_hub_file,
    path_from_uri,
)
from fleet.engines.launch_options import LaunchOptions
from fleet.errors import BadRequest
from fleet.paths import inside

OPTION = "multimodal_projector"


def wanted_projector(family: BaseFamily, spec: ModelSpec, options: Any) -> str | None:
    """The projector a launch asks for: its `multimodal_projector` option, else the spec's first
    for a vision family; None for none. `options`: the engine's launch options (or the launch
    body), read by name, so that engines without the option ask for none."""
    named = options.get(OPTION) if isinstance(options, dict) else getattr(options, OPTION, None)
    if named is not None:
        return named or None
    if "vision" in family.abilities and spec.model_format == "gguf" and spec.multimodal_projectors:
        return spec.multimodal_projectors[0]
    return None


def is_local_path(name: str) -> bool:
    """A projector named by its own path rather than by a file name of the weights' folder."""
    return name.startswith(("/", "file://"))


def check_projector_choice(spec: ModelSpec, name: str | None, from_hub: bool) -> None:
    """A file name for weights that come from the hub must be one the spec lists: anything
    else would be a download that fails, or a file the repository does not mean as one."""
    if not name or is_local_path(name) or not from_hub or not spec.multimodal_projectors:
        return
    if name not in spec.multimodal_projectors:
        listed = ", ".join(spec.multimodal_projectors)
        raise BadRequest(f"{OPTION} {name!r} is not one of this model's projectors: {listed}",
                         code="unknown_projector")


def _folder(family: BaseFamily, spec: ModelSpec, quantization: str,
            model_path: str | None) -> tuple[Path, bool]:
    """(the folder a projector's file name is looked for in, whether it is the cache folder of
    a hub download)."""
    source = model_path or spec.model_uri
    if source:
        local = path_from_uri(source)
        return (local if local.is_dir() else local.parent), False
    return cache_folder(family, spec, quantization), True


def local_projector(family: BaseFamily, spec: ModelSpec, quantization: str,
                    model_path: str | None, name: str) -> Path | None:
    """The projector's file where this machine sees it, or None (not there, or not downloaded
    yet). Read by the memory estimate as well as by the launch."""
    if is_local_path(name):
        path = path_from_uri(name)
    else:
        folder, _ = _folder(family, spec, quantization, model_path)
        path = inside(folder, name)
    return path if path.is_file() else None


def resolve_projector(family: BaseFamily, spec: ModelSpec, quantization: str,
                      model_path: str | None, name: str, progress: ProgressCallback) -> Path:
    """The projector's local file: found, or downloaded from the spec's hub repository into the
    weights' cache folder. BadRequest when a local one is missing."""
    found = local_projector(family, spec, quantization, model_path, name)
    if found is not None:
        return found
    if is_local_path(name):
        raise BadRequest(f"{OPTION} {name!r} is not a file on this worker", code="no_projector")
    folder, from_hub = _folder(family, spec, quantization, model_path)
    if not from_hub:
        raise BadRequest(f"{OPTION} {name!r} is not in the model's folder {str(folder)!r}: "
                         f"put it there, give its path, or launch with {OPTION}=\"\" to read "
                         "text only", code="no_projector")
    return download_hub_file(family, spec, name, folder, progress)


def with_projector(family: BaseFamily, spec: ModelSpec, quantization: str,
                   model_path: str | None, options: LaunchOptions,
                   progress: ProgressCallback) -> LaunchOptions:
    """The engine's launch options with the projector it is to load as a local file's path, or
    "" for none; unchanged for engines that take no projector."""
    if OPTION not in type(options).model_fields:
        return options
    name = wanted_projector(family, spec, options)
    path = resolve_projector(family, spec, quantization, model_path, name, progress) if name else ""
    return options.model_copy(update={OPTION: str(path)})
