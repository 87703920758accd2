"""What a model's local files say about its size: parameter counts per dtype from safetensors
headers, the attention shape from config.json, or both from a GGUF file's metadata. Pure
Python: it reads headers only, never the weights, and imports no engine library.
GGUF metadata comes from fleet.gguf_metadata."""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fleet.catalogue.audio_formats import local_audio_format
from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.cluster.weights.download import gguf_file, path_from_uri
from fleet.errors import BadRequest
from fleet.gguf_metadata import read_gguf_metadata

# Folders of other runtimes' exports that sentence-transformers and Transformers never load.
_IGNORED_FOLDERS = {"onnx", "openvino", "coreml", "tflite"}
_WEIGHT_SUFFIXES = (("safetensors", (".safetensors",)), ("bin", (".bin", ".pt", ".pth")),
                    ("onnx", (".onnx",)))
# Names looked at when searching a folder for weights (a model folder has a few dozen).
_MAX_ENTRIES = 5000
_SPLIT_GGUF = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<parts>\d{5})\.gguf$", re.IGNORECASE)

# llama.cpp's `general.file_type` values (LlamaFileType in gguf-py), for display.
GGUF_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
}


@dataclass(frozen=True)
class ModelShape:
    """Sizes read from local files. Fields are None where the files do not say."""

    source: str  # "safetensors", "bin" or "gguf"
    files: tuple[str, ...]
    file_bytes: int
    # safetensors only: element counts per stored dtype ("BF16", "F32", "I64"...).
    params_by_dtype: dict[str, int] = field(default_factory=dict)
    # The dtype the checkpoint was saved in (config.json's torch_dtype/dtype), when it says.
    stored_dtype: str | None = None
    layers: int | None = None
    kv_heads: int | None = None
    head_dim: int | None = None
    # K and V elements one token adds to the cache, summed over layers (2 x layers x kv_heads
    # x head_dim for the usual architectures; per-layer head counts are summed as they are).
    kv_elements_per_token: int | None = None
    max_context: int | None = None
    gguf_file_type: str | None = None


def infer_model_format(model_path: str | None, family: BaseFamily) -> str | None:
    """The format a local path holds, when the launch does not say: a .gguf file is gguf, a
    folder is a Hugging Face folder (the family's first non-GGUF format) unless it holds only
    GGUF files. None when the path says nothing (or is not visible from here)."""
    if not model_path:
        return None
    try:
        path = path_from_uri(model_path)
    except BadRequest:
        return None
    if path.suffix.lower() == ".gguf":  # said by its name, even where the file is not visible
        return "gguf"
    if not path.is_dir():
        return None
    if any(path.glob("*.gguf")) and not (path / "config.json").exists():
        return "gguf"
    # Audio: a CTranslate2 conversion of Whisper goes to faster-whisper, a Transformers
    # checkpoint (its config names its class) to Transformers, whichever the family lists first.
    if family.model_type == "audio":
        found = local_audio_format(str(path)) or (
            "pytorch" if (path / "config.json").exists() else None)
        if found and any(s.model_format == found for s in family.model_specs):
            return found
    # ONNX models with no Hugging Face config beside them (RapidOCR's, Piper's voices).
    if (any(path.glob("*.onnx")) and not (path / "config.json").exists()
            and any(s.model_format == "onnx" for s in family.model_specs)):
        return "onnx"
    folder_formats = [s.model_format for s in family.model_specs if s.model_format != "gguf"]
    return folder_formats[0] if folder_formats else None


def inspect_weights(path: Path, spec: ModelSpec, quantization: str) -> ModelShape | None:
    """The shape of the model at `path` (a folder, or a GGUF file); None when no weight files
    are found there."""
    if spec.model_format == "gguf" or path.suffix.lower() == ".gguf":
        # The file the engine will load (a folder must hold one GGUF file for the quantization).
        gguf = gguf_file(path, spec, quantization)
        return _cached_gguf_shape(*_file_key(gguf)) if gguf.is_file() else None
    if path.is_file() and path.suffix == ".safetensors":
        source, files, folder = "safetensors", [path], path.parent
    elif path.is_dir():
        (source, files), folder = _weight_files(path), path
    else:
        return None
    if not files:
        return None
    config = folder / "config.json"
    config_key = _file_key(config) if config.is_file() else None
    stamps = tuple(_file_key(f) for f in files) + ((config_key,) if config_key else ())
    return _cached_folder_shape(source, stamps, config_key[0] if config_key else None)


def _file_key(path: Path) -> tuple[str, int, int]:
    # Cached by path, size and modification time: a replaced file is read again.
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns


# ---- Hugging Face folders ----------------------------------------------------------------------


def _weight_files(folder: Path) -> tuple[str, list[Path]]:
    """safetensors if any (repositories often ship .bin copies too: only one set is loaded),
    in the folder itself, else in its subfolders (sentence-transformers' older layout), never
    deeper, and looking at no more than _MAX_ENTRIES names: a path that is no model folder
    (`/`, a home folder) is answered in milliseconds instead of walking the disk."""
    budget = [_MAX_ENTRIES]
    top = _listing(folder, budget)
    # A diffusers pipeline loads its components' folders; a checkpoint file at the top of such
    # a repository is the same weights again, in one file, and not loaded.
    pipeline = any(p.name == "model_index.json" for p in top)
    nested: list[Path] | None = None
    for source, suffixes in _WEIGHT_SUFFIXES:
        found = [] if pipeline else sorted(p for p in top if p.suffix in suffixes and p.is_file())
        if found:
            return source, found
        if nested is None:
            subfolders = [p for p in top if p.name not in _IGNORED_FOLDERS and p.is_dir()]
            nested = [f for sub in subfolders for f in _listing(sub, budget)]
        found = sorted(p for p in nested if p.suffix in suffixes and p.is_file())
        if found:
            return source, _without_variants(found)
    return "", []


def _without_variants(files: list[Path]) -> list[Path]:
    """A diffusers folder may hold `model.fp16.safetensors` beside `model.safetensors`: only
    one of them is loaded, so a variant counts only where it is all there is."""
    names = {str(f) for f in files}
    kept = []
    for path in files:
        stem, dot, suffix = path.name.rpartition(".")
        plain_stem, _, variant = stem.rpartition(".")
        if variant in ("fp16", "bf16") and str(path.with_name(f"{plain_stem}{dot}{suffix}")) in names:
            continue
        kept.append(path)
    return kept


def _listing(folder: Path, budget: list[int]) -> list[Path]:
    """The names in `folder`, drawing on the shared `budget` of names left to look at."""
    names: list[Path] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
                names.append(Path(entry.path))
    except OSError:  # unreadable: nothing to count there
        pass
    return names


def safetensors_params(path: Path) -> dict[str, int]:
    """Element counts per dtype, from the file's JSON header (8-byte length, then the header)."""
    counts: dict[str, int] = {}
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    for name, info in header.items():
        if name == "__metadata__":
            continue
        elements = 1
        for dim in info["shape"]:
            elements *= int(dim)
        counts[info["dtype"]] = counts.get(info["dtype"], 0) + elements
    return counts


def config_shape(config: dict[str, Any]) -> dict[str, int | None]:
    """Layers, KV heads, head size and longest context from a Transformers config.json."""
    config = config.get("text_config") or config  # multimodal models nest the language model
    layers = config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers")
    heads = config.get("num_attention_heads") or config.get("n_head")
    kv_heads = config.get("num_key_value_heads") or heads
    hidden = config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    max_context = config.get("max_position_embeddings") or config.get("n_positions")
    kv = 2 * layers * kv_heads * head_dim if layers and kv_heads and head_dim else None
    return {"layers": layers, "kv_heads": kv_heads, "head_dim": head_dim,
            "kv_elements_per_token": kv, "max_context": max_context}


@lru_cache(maxsize=64)
def _cached_folder_shape(source: str, stamps: tuple[tuple[str, int, int], ...],
                         config_path: str | None) -> ModelShape:
    """Read once per set of files (their paths, sizes and modification times: `stamps`)."""
    files = [Path(name) for name, _, _ in stamps if name != config_path]
    params: dict[str, int] = {}
    if source == "safetensors":
        for file in files:
            for dtype, count in safetensors_params(file).items():
                params[dtype] = params.get(dtype, 0) + count
    config: Any = {}
    if config_path:
        try:
            config = json.loads(Path(config_path).read_text())
        except (OSError, ValueError):
            config = {}  # a broken config is the engine's error to report, not ours
    config = config if isinstance(config, dict) else {}
    stored = config.get("torch_dtype") or config.get("dtype")
    return ModelShape(
        source=source, files=tuple(str(f) for f in files),
        file_bytes=sum(size for name, size, _ in stamps if name != config_path),
        params_by_dtype=params, stored_dtype=stored if isinstance(stored, str) else None,
        **config_shape(config),
    )


# ---- GGUF --------------------------------------------------------------------------------------


def _gguf_parts(path: Path) -> list[Path]:
    """All parts of a split GGUF (`name-00001-of-00003.gguf`), or the file alone."""
    match = _SPLIT_GGUF.match(path.name)
    if not match:
        return [path]
    count = int(match["parts"])
    parts = [path.with_name(f"{match['stem']}-{i:05d}-of-{match['parts']}.gguf")
             for i in range(1, count + 1)]
    return [p for p in parts if p.is_file()]


def _gguf_attention(meta: dict[str, Any]) -> dict[str, Any]:
    arch = meta.get("general.architecture", "")
    layers = meta.get(f"{arch}.block_count")
    heads = meta.get(f"{arch}.attention.head_count")
    kv = meta.get(f"{arch}.attention.head_count_kv", heads)
    # Some architectures give one head count per layer (OpenELM; 0 for layers without attention).
    heads_list = heads if isinstance(heads, list) else [heads] * (layers or 0)
    kv_list = kv if isinstance(kv, list) else [kv] * (layers or 0)
    embedding = meta.get(f"{arch}.embedding_length")
    widest = max((h for h in heads_list if h), default=0)
    key_dim = meta.get(f"{arch}.attention.key_length") or (
        embedding // widest if embedding and widest else None)
    value_dim = meta.get(f"{arch}.attention.value_length") or key_dim
    known = key_dim and kv_list and None not in kv_list
    return {
        "layers": layers,
        "kv_heads": max(kv_list) if known else None,
        "head_dim": key_dim,
        "kv_elements_per_token": sum(kv_list) * (key_dim + value_dim) if known else None,
        "max_context": meta.get(f"{arch}.context_length"),
    }


@lru_cache(maxsize=64)
def _cached_gguf_shape(path: str, size: int, mtime_ns: int) -> ModelShape | None:
    file = Path(path)
    try:
        meta = read_gguf_metadata(file, wanted=(".attention.head_count_kv",
                                                ".attention.head_count"))
    except (OSError, ValueError):
        return None
    parts = _gguf_parts(file)
    return ModelShape(
        source="gguf", files=tuple(str(p) for p in parts),
        file_bytes=sum(p.stat().st_size for p in parts), **_gguf_attention(meta),
        gguf_file_type=GGUF_FILE_TYPES.get(meta.get("general.file_type", -1)),
    )
