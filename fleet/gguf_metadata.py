"""Reading a GGUF file's key/value metadata: the cluster's memory estimate needs the attention
shape, and the llama.cpp engine the context the model was trained for, before either loads a
weight. Pure Python, and it imports nothing from the cluster or the engines.

Read here rather than with the `gguf` package: that package is not one of Fleet's core
dependencies, and its GGUFReader parses every tokenizer string and tensor record (seconds per
file, more for large vocabularies; docs/benchmarks.md) where we need ten numbers."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


def _read(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


# No GGUF metadata string comes near this (chat templates are tens of KB); a corrupt length
# must not make the supervisor allocate gigabytes.
_MAX_STRING = 16 << 20


def _read_string(handle: BinaryIO) -> str:
    length = _read(handle, "<Q")
    if length > _MAX_STRING:
        raise ValueError(f"GGUF string of {length} bytes: the file is corrupt")
    return handle.read(length).decode("utf-8", errors="replace")


def _read_value(handle: BinaryIO, kind: int, keep: bool) -> Any:
    """One metadata value; arrays are skipped (None) unless `keep`, strings are always read."""
    if kind in _SCALARS:
        return _read(handle, _SCALARS[kind])
    if kind == _STRING:
        return _read_string(handle)
    if kind != _ARRAY:
        raise ValueError(f"unknown GGUF value type {kind}")
    item_kind, count = _read(handle, "<I"), _read(handle, "<Q")
    if item_kind in _SCALARS and not keep:
        handle.seek(count * struct.calcsize(_SCALARS[item_kind]), 1)
        return None
    if item_kind == _STRING and not keep:
        for _ in range(count):  # tokenizer vocabularies: skip each string by its length
            handle.seek(_read(handle, "<Q"), 1)
        return None
    return [_read_value(handle, item_kind, True) for _ in range(count)]


def read_gguf_metadata(path: Path, wanted: tuple[str, ...] = ()) -> dict[str, Any]:
    """The key/value metadata of a GGUF file (version 2 or 3, little-endian). Arrays are read
    only for keys ending with one of `wanted` (per-layer head counts); others are skipped."""
    with open(path, "rb", buffering=1 << 16) as handle:
        if handle.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = _read(handle, "<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported")
        _tensors, count = _read(handle, "<Q"), _read(handle, "<Q")
        metadata: dict[str, Any] = {}
        for _ in range(count):
            key = _read_string(handle)
            kind = _read(handle, "<I")
            value = _read_value(handle, kind, key.endswith(wanted) if wanted else False)
            if value is not None:
                metadata[key] = value
    return metadata


def trained_context(meta: dict[str, Any]) -> int | None:
    """The context length the model was trained for, if its GGUF metadata says."""
    value = meta.get(f"{meta.get('general.architecture', '')}.context_length")
    return int(value) if value else None
