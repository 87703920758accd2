"""Will it fit: what a replica needs in memory, estimated before it is launched.

    need = weights + KV cache + engine overhead

- Weights: from the local files when the supervisor can see them (a folder of safetensors or
  .bin files, or a .gguf file), converted to the dtype the engine loads them in (Transformers
  loads fp32 on CPU, so a bf16 checkpoint of N bytes takes 2N); else from the spec's
  `model_size_in_billions` times the bytes per parameter of the dtype or GGUF quantization.
- KV cache: 2 (K and V) x layers x KV heads x head size x bytes per element x tokens, with the
  shape from config.json or the GGUF metadata. tokens = context x sequences: the context is the
  launch's `context_length` (or `n_ctx`), else the family's context capped by the model's own
  limit; sequences are the launch's `max_num_seqs` (or `n_parallel`), else 1, since one
  full-length sequence is what an engine must hold to serve the model at all (vLLM refuses to
  start otherwise) and Transformers grows its cache with the batch rather than reserving it, so
  a launch that expects many long requests at once says so with max_num_seqs. llama.cpp keeps
  one cache of `context` tokens that all its slots share, so its tokens are the context alone.
  vLLM's paged cache is one pool too (its sequences share it, like llama.cpp's slots): on a
  CPU it is what it reserves at load (`cpu_kv_cache_gib`); on a GPU it takes a share of the
  GPU's memory (gpu_memory_utilization), and what it needs of that is one full-length sequence.
  Without a config (a hub model not downloaded yet) the KV part is unknown: the estimate is
  then a lower bound, still enough to refuse what cannot fit.
- Overhead: a constant per engine (fleet/engines/registry.py), plus for embedding and rerank
  models an allowance for a batch's activations. LLM activations beyond the KV cache are small
  next to it at these batch sizes and are left to the overhead."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.cluster.weights.download import cached_weights, local_weights
from fleet.cluster.weights.projector import local_projector, wanted_projector
from fleet.cluster.weights.weights_info import ModelShape, inspect_weights
from fleet.engines.base import EngineInfo
from fleet.errors import BadRequest, FleetError

MIB = 2**20
GIB = 2**30
# Embedding and rerank batches (up to 64 items of up to 512 tokens) need activations on top.
ACTIVATION_ALLOWANCE = 256 * MIB

# Bytes per element of unquantized dtypes and of llama.cpp's KV cache types (q8_0 stores 32
# values in 34 bytes, q4_0 in 18...).
_BYTES = {
    "float64": 8, "f64": 8, "float32": 4, "fp32": 4, "f32": 4, "float": 4, "bfloat16": 2,
    "bf16": 2, "float16": 2, "fp16": 2, "f16": 2, "half": 2, "float8": 1, "fp8": 1,
    "f8_e4m3": 1, "f8_e5m2": 1, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
    "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32,
}
# safetensors dtype names that Transformers converts when it loads in another dtype.
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_STORED_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
                 "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
# Effective bits per weight of GGUF quantizations (scales included), from llama.cpp's quantize
# table for 7-8B models; mixes such as Q4_K_M vary a little with the architecture.
GGUF_BITS = {
    "f32": 32, "f16": 16, "bf16": 16, "q8_0": 8.5, "q6_k": 6.56, "q5_k_m": 5.69, "q5_k_s": 5.54,
    "q5_1": 6.0, "q5_0": 5.5, "q4_k_m": 4.85, "q4_k_s": 4.58, "q4_1": 5.0, "q4_0": 4.5,
    "iq4_nl": 4.5, "iq4_xs": 4.25, "q3_k_l": 4.27, "q3_k_m": 3.91, "q3_k_s": 3.5, "iq3_m": 3.66,
    "iq3_s": 3.44, "iq3_xxs": 3.06, "q2_k": 3.0, "iq2_m": 2.7, "iq2_s": 2.5, "iq2_xs": 2.31,
    "iq2_xxs": 2.06, "iq1_m": 1.75, "iq1_s": 1.56, "tq2_0": 2.06, "tq1_0": 1.69,
}
# Checkpoints on the hub are bf16 nowadays: the size of unquantized weights not seen yet.
_DEFAULT_STORED = "bfloat16"


def human(size: float) -> str:
    """Bytes for people: MiB below a GiB, else GiB with one decimal."""
    return f"{size / MIB:.0f} MiB" if size < GIB else f"{size / GIB:.1f} GiB"


@dataclass
class MemoryEstimate:
    """Bytes a replica needs, by part; None where a part is unknown."""

    weights: int | None
    kv_cache: int | None
    overhead: int
    device: str  # "cpu" or "cuda"
    inputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        """The known parts: a lower bound when one is unknown."""
        return (self.weights or 0) + (self.kv_cache or 0) + self.overhead

    @property
    def checkable(self) -> bool:
        """Worth comparing to a worker's memory: without the weights, it says nothing."""
        return self.weights is not None

    def breakdown(self) -> str:
        parts = [f"weights {human(self.weights)}" if self.weights is not None else None,
                 f"KV cache {human(self.kv_cache)}" if self.kv_cache else None,
                 f"overhead {human(self.overhead)}"]
        text = " + ".join(p for p in parts if p)
        if self.weights is None:
            text += "; weights unknown"
        if self.kv_cache is None:
            text += "; KV cache unknown"
        return text

    def summary(self) -> str:
        """`9.8 GiB (weights 8.1 GiB + KV cache 1.2 GiB + overhead 512 MiB)`."""
        at_least = "" if self.weights is not None and self.kv_cache is not None else "at least "
        return f"{at_least}{human(self.total)} ({self.breakdown()})"

    def as_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "kv_cache": self.kv_cache, "overhead": self.overhead,
                "total": self.total, "device": self.device, "complete": self.weights is not None
                and self.kv_cache is not None, "summary": self.summary(), "inputs": self.inputs,
                "notes": self.notes}


def _int_option(options: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = options.get(name)
        if value not in (None, "", "auto"):
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise BadRequest(f"{name} must be an integer, got {value!r}") from None
            if number < 1:
                raise BadRequest(f"{name} must be at least 1, got {number}")
            return number
    return None


def dtype_bytes(name: str) -> float:
    return _BYTES.get(name.lower().removeprefix("torch."), 2)


def parameter_count(spec: ModelSpec) -> float | None:
    if spec.model_size_in_billions is None:
        return None
    try:
        return float(spec.size_label) * 1e9
    except ValueError:
        return None


def _load_dtype(engine: EngineInfo, device: str, options: dict[str, Any]) -> str | None:
    requested = options.get("torch_dtype") or options.get("dtype")
    if isinstance(requested, str) and requested != "auto":
        return requested.removeprefix("torch.")
    return engine.memory.gpu_dtype if device == "cuda" else engine.memory.cpu_dtype


def _weights_from_files(shape: ModelShape, load_dtype: str | None) -> int:
    if shape.source == "gguf" or load_dtype is None:
        return shape.file_bytes  # loaded as stored (llama.cpp maps the file as it is)
    target = dtype_bytes(load_dtype)
    if shape.params_by_dtype:
        # Floating tensors become the load dtype; integer ones (packed quantized weights,
        # position ids) stay as they are.
        return int(sum(count * (target if dtype in _FLOAT_DTYPES else _STORED_BYTES.get(dtype, 4))
                       for dtype, count in shape.params_by_dtype.items()))
    stored = dtype_bytes(shape.stored_dtype or "float32")  # old .bin checkpoints are fp32
    return int(shape.file_bytes * target / stored)


def _weights_from_size(spec: ModelSpec, quantization: str, load_dtype: str | None,
                       notes: list[str]) -> int | None:
    params = parameter_count(spec)
    if params is None:
        notes.append("weights unknown: no local files and no model_size_in_billions")
        return None
    quant = (quantization or "none").lower()
    if spec.model_format == "gguf":
        bits = GGUF_BITS.get(quant)
        if bits is None:
            digits = re.search(r"(\d+)", quant)
            bits = int(digits.group(1)) + 0.5 if digits else 16
            notes.append(f"unknown GGUF quantization {quantization!r}: assumed {bits} bits/weight")
        return int(params * bits / 8)
    if quant in _BYTES:  # fp8, bf16... named as the quantization
        return int(params * _BYTES[quant])
    digits = re.search(r"(\d+)", quant) if quant != "none" else None
    if digits or spec.model_format in ("gptq", "awq"):
        # "4-bit", "Int8", GPTQ/AWQ folders (4 bits unless named): group scales add a little.
        bits = int(digits.group(1)) if digits else 4
        return int(params * (bits + 0.25) / 8)
    dtype = load_dtype or _DEFAULT_STORED
    notes.append(f"weights from {spec.size_label}B parameters as {dtype}")
    return int(params * dtype_bytes(dtype))


def local_model_path(model_path: str | None, family: BaseFamily, spec: ModelSpec,
                     quantization: str) -> Path | None:
    """The weights as this machine sees them: the launch's path, the spec's model_uri, or a
    complete download in the cache. None when none of them is here."""
    if model_path or spec.model_uri or spec.model_package:
        try:
            return local_weights(model_path, spec)
        except FleetError:  # not on this machine (or not a local path): nothing to read
            return None
    return cached_weights(family, spec, quantization)


def _projector_bytes(family: BaseFamily, spec: ModelSpec, quantization: str,
                     options: dict[str, Any]) -> int:
    """The size of the vision projector a launch loads, where this machine sees its file."""
    name = wanted_projector(family, spec, options)
    if not name:
        return 0
    try:
        path = local_projector(family, spec, quantization, options.get("model_path"), name)
        return path.stat().st_size if path is not None else 0
    except (FleetError, OSError):  # not here (or not a local path): nothing to read
        return 0


def _kv_tokens(family: BaseFamily, engine: EngineInfo, shape: ModelShape | None,
               options: dict[str, Any]) -> tuple[int, int, int]:
    """(context per sequence, sequences, tokens the cache holds)."""
    sequences = _int_option(options, "n_parallel", "max_num_seqs") or engine.memory.default_sequences
    context = _int_option(options, "context_length", "n_ctx")
    if context is None:
        context = int(getattr(family, "context_length", 2048))
        if shape is not None and shape.max_context:
            context = min(context, int(shape.max_context))
    if engine.memory.shared_cache:  # llama.cpp: one pool of `context` tokens for every slot
        return context, sequences, context
    return context, sequences, context * sequences


def estimate_memory(
    family: BaseFamily,
    spec: ModelSpec,
    quantization: str,
    engine: EngineInfo,
    device: str,
    options: dict[str, Any],
) -> MemoryEstimate:
    """What one replica of `family` on `engine` needs on `device` ("cpu" or "cuda").
    options: the launch request (model_path and the engine's arguments)."""
    notes: list[str] = []
    path = local_model_path(options.get("model_path"), family, spec, quantization)
    shape = inspect_weights(path, spec, quantization) if path is not None else None
    load_dtype = _load_dtype(engine, device, options)
    inputs: dict[str, Any] = {"engine": engine.name, "model_format": spec.model_format,
                              "quantization": quantization, "load_dtype": load_dtype or "as stored"}
    if shape is not None:
        weights: int | None = _weights_from_files(shape, load_dtype)
        inputs.update(weights_from=shape.source, model_path=str(path), file_bytes=shape.file_bytes)
        if shape.gguf_file_type:
            inputs["gguf_file_type"] = shape.gguf_file_type
    else:
        if options.get("model_path") and path is None:
            notes.append("model_path is not visible from the supervisor: estimated from the size")
        weights = _weights_from_size(spec, quantization, load_dtype, notes)
        inputs["weights_from"] = "model_size_in_billions" if weights is not None else None
    projector = _projector_bytes(family, spec, quantization, options)
    if projector and weights is not None:
        # llama.cpp loads a vision projector beside the weights, on the same device.
        weights += projector
        inputs["projector_bytes"] = projector
    overhead = engine.memory.overhead_mib * MIB
    kv_cache: int | None = 0
    if family.model_type == "LLM":
        kv_cache = _kv_cache(family, engine, device, shape, options, load_dtype, inputs, notes)
    else:
        overhead += ACTIVATION_ALLOWANCE
    return MemoryEstimate(weights=weights, kv_cache=kv_cache, overhead=overhead, device=device,
                          inputs=inputs, notes=notes)


def _kv_cache(family: BaseFamily, engine: EngineInfo, device: str, shape: ModelShape | None,
              options: dict[str, Any], load_dtype: str | None, inputs: dict[str, Any],
              notes: list[str]) -> int | None:
    context, sequences, tokens = _kv_tokens(family, engine, shape, options)
    inputs.update(context_length=context, sequences=sequences, kv_tokens=tokens)
    if device == "cpu" and engine.memory.cpu_kv_option:
        # A pool reserved whole at load: that, whatever the context and sequences.
        reserved = (_int_option(options, engine.memory.cpu_kv_option)
                    or engine.memory.cpu_kv_default_gib) * GIB
        inputs["kv_reserved_bytes"] = reserved
        notes.append(f"{engine.name} reserves {human(reserved)} of KV cache at load "
                     f"({engine.memory.cpu_kv_option})")
        return reserved
    if shape is None or not shape.kv_elements_per_token:
        notes.append("KV cache unknown: no config.json or GGUF metadata to read layers and heads")
        return None
    kv_dtype = engine.memory.kv_dtype or load_dtype or shape.stored_dtype or _DEFAULT_STORED
    per_element = dtype_bytes(str(kv_dtype))
    inputs.update(layers=shape.layers, kv_heads=shape.kv_heads, head_dim=shape.head_dim,
                  kv_dtype=str(kv_dtype), kv_bytes_per_token=int(shape.kv_elements_per_token
                                                                 * per_element))
    return int(shape.kv_elements_per_token * per_element * tokens)
