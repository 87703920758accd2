"""Every engine Fleet knows, what each can run, and the automatic choice among them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.catalogue.registry import select_spec
from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.catalogue.xinference_format import xinference_format_name
from fleet.engines.base import EngineInfo, MemoryProfile
from fleet.engines.launch_options import (
    VLLM_CPU_KV_CACHE_GIB,
    CrossEncoderRerankOptions,
    DiffusersImageOptions,
    FasterWhisperOptions,
    KokoroOptions,
    LlamaCppEmbeddingOptions,
    LlamaCppLLMOptions,
    PiperOptions,
    RapidOCROptions,
    SentenceTransformersEmbeddingOptions,
    TransformersLLMOptions,
    TransformersRerankOptions,
    TransformersWhisperOptions,
    VLLMOptions,
    describe_options,
)
from fleet.errors import BadRequest

# The automatic choice follows `priority` among the engines that can run the chosen spec:
# GGUF weights go to llama.cpp (the only GGUF engine); Hugging Face folders (pytorch,
# safetensors) to vLLM when the machine has a GPU and vLLM is installed (priority 15,
# auto_only_on_gpu: on a CPU it runs only when named), else to Transformers;
# embeddings and cross-encoders in such folders to sentence-transformers (GGUF embeddings to
# llama.cpp, like every GGUF file).
#
# Memory profiles: overheads measured on this code base as the resident memory of a replica
# process before weights (xoscar and Fleet ~95 MiB; `import torch, transformers` ~250 MiB,
# `import sentence_transformers` ~460 MiB, `import xllamacpp` ~30 MiB), rounded up for work
# buffers. Transformers loads weights as fp32 on CPU and bf16 on GPU (see pick_dtype);
# sentence-transformers (on Transformers 5) keeps the checkpoint's dtype; llama.cpp maps the
# GGUF file as it is and reserves one f16 KV cache at load, shared by its parallel slots.
# Image models go to diffusers (pipelines) or RapidOCR (OCR), each the only engine of its kind.
# Audio: the files tell the engine (fleet.catalogue.audio_formats): a CTranslate2 conversion of
# Whisper (ct2) goes to faster-whisper, a Transformers checkpoint (pytorch) to transformers,
# a Piper voice (onnx) to piper, Kokoro's folder (pytorch, text2audio) to kokoro.

ENGINES: tuple[EngineInfo, ...] = (
    EngineInfo(
        name="sentence_transformers",
        implementations={
            "embedding": "fleet.engines.sentence_transformers_embedding:SentenceTransformersEmbedding",
            "rerank": "fleet.engines.cross_encoder_rerank:CrossEncoderRerank",
        },
        formats=("pytorch", "safetensors"),
        abilities=("embed", "rerank"),
        requires=("torch", "sentence_transformers"),
        priority=10,
        pip_extra="sentence-transformers",
        rerank_kinds=("normal",),
        memory=MemoryProfile(overhead_mib=512),
        launch_options={"embedding": SentenceTransformersEmbeddingOptions,
                        "rerank": CrossEncoderRerankOptions},
    ),
    EngineInfo(
        name="transformers",
        implementations={
            "LLM": "fleet.engines.transformers_llm:TransformersLLM",
            "rerank": "fleet.engines.llm_rerank:LLMRerank",
            "audio": "fleet.engines.transformers_whisper:TransformersWhisper",
        },
        formats=("pytorch", "safetensors"),
        abilities=("chat", "generate", "rerank", "audio2text"),
        requires=("torch", "transformers"),
        priority=20,
        pip_extra="transformers",
        rerank_kinds=("LLM-based",),
        memory=MemoryProfile(overhead_mib=512, cpu_dtype="float32", gpu_dtype="bfloat16"),
        launch_options={"LLM": TransformersLLMOptions, "rerank": TransformersRerankOptions,
                        "audio": TransformersWhisperOptions},
    ),
    EngineInfo(
        name="vllm",
        implementations={"LLM": "fleet.engines.vllm_llm:VLLMLLM"},
        formats=("pytorch", "safetensors"),
        abilities=("chat", "generate", "tools", "reasoning"),
        requires=("vllm",),
        # Before transformers: on a GPU, vLLM's paged cache and kernels serve a batch faster.
        priority=15,
        pip_extra="vllm",
        auto_only_on_gpu=True,
        # `import vllm` and its engine-core process (~1.3 GiB resident here before weights).
        # Its paged KV cache is one pool that the sequences share, reserved at load: a share
        # of the GPU (which must hold one full sequence), or cpu_kv_cache_gib on a CPU.
        memory=MemoryProfile(overhead_mib=1536, cpu_dtype="float32", shared_cache=True,
                             cpu_kv_option="cpu_kv_cache_gib",
                             cpu_kv_default_gib=VLLM_CPU_KV_CACHE_GIB),
        launch_options={"LLM": VLLMOptions},
    ),
    EngineInfo(
        name="llama.cpp",
        implementations={"LLM": "fleet.engines.llamacpp_llm:LlamaCppLLM",
                         "embedding": "fleet.engines.llamacpp_embedding:LlamaCppEmbedding"},
        formats=("gguf",),
        abilities=("chat", "generate", "tools", "reasoning", "embed"),
        # xllamacpp: prebuilt CPU and GPU wheels of llama.cpp's server, with its parallel
        # slots (several sequences decoded together); see fleet/engines/llamacpp_llm.py.
        requires=("xllamacpp",),
        priority=5,
        pip_extra="llama-cpp",
        # One cache shared by all slots, reserved at load (see llamacpp_llm.py).
        memory=MemoryProfile(overhead_mib=128, kv_dtype="f16", shared_cache=True),
        launch_options={"LLM": LlamaCppLLMOptions, "embedding": LlamaCppEmbeddingOptions},
    ),
    EngineInfo(
        name="diffusers",
        implementations={"image": "fleet.engines.diffusers_image:DiffusersImage"},
        formats=("pytorch", "safetensors"),
        abilities=("text2image", "image2image", "inpainting"),
        requires=("torch", "diffusers"),
        priority=20,
        pip_extra="image",
        # `import torch, diffusers, transformers` and the pipeline's work buffers. Weights load
        # as fp32 on a CPU, fp16 on a GPU unless the family says bf16 (pick_image_dtype).
        memory=MemoryProfile(overhead_mib=768, cpu_dtype="float32", gpu_dtype="float16"),
        launch_options={"image": DiffusersImageOptions},
    ),
    EngineInfo(
        name="faster-whisper",
        implementations={"audio": "fleet.engines.faster_whisper_stt:FasterWhisperTranscription"},
        formats=("ct2",),
        abilities=("audio2text",),
        requires=("faster_whisper",),
        priority=10,
        pip_extra="audio",
        # ctranslate2, onnxruntime (Silero VAD) and PyAV; the weights load as they are stored
        # (float16 conversions run as float32 on most CPUs, see FasterWhisperOptions).
        memory=MemoryProfile(overhead_mib=384),
        launch_options={"audio": FasterWhisperOptions},
    ),
    EngineInfo(
        name="piper",
        implementations={"audio": "fleet.engines.piper_tts:PiperSpeech"},
        formats=("onnx",),
        abilities=("text2audio",),
        requires=("piper",),
        priority=10,
        pip_extra="audio",
        memory=MemoryProfile(overhead_mib=256),  # onnxruntime, espeak-ng, PyAV
        launch_options={"audio": PiperOptions},
    ),
    EngineInfo(
        name="kokoro",
        implementations={"audio": "fleet.engines.kokoro_tts:KokoroSpeech"},
        formats=("pytorch",),
        abilities=("text2audio",),
        requires=("kokoro", "torch"),
        priority=20,
        pip_extra="kokoro",
        memory=MemoryProfile(overhead_mib=768, cpu_dtype="float32", gpu_dtype="float32"),
        launch_options={"audio": KokoroOptions},
    ),
    EngineInfo(
        name="rapidocr",
        implementations={"image": "fleet.engines.rapidocr_ocr:RapidOCREngine"},
        formats=("onnx",),
        abilities=("ocr",),
        requires=("rapidocr_onnxruntime",),
        priority=20,
        pip_extra="image",
        # onnxruntime and OpenCV in the process; the models are small and run as stored.
        memory=MemoryProfile(overhead_mib=256),
        launch_options={"image": RapidOCROptions},
    ),
)


def _normalized(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def engine_by_name(name: str) -> EngineInfo:
    """Engine names are matched case-insensitively, with -, _ and . alike (llama.cpp, llama_cpp)."""
    wanted = _normalized(name)
    for engine in ENGINES:
        if _normalized(engine.name) == wanted:
            return engine
    known = ", ".join(e.name for e in ENGINES)
    raise BadRequest(f"unknown engine {name!r}; known engines: {known}", code="engine_not_found")


def engine_matrix(family: BaseFamily, has_gpu: bool | None = None) -> list[dict[str, Any]]:
    """One row per engine: whether it can run the family, and the reason when it cannot."""
    rows = []
    for engine in sorted(ENGINES, key=lambda e: e.priority):
        reason = engine.why_not(family, has_gpu=has_gpu)
        specs = [s for s in family.model_specs if s.model_format in engine.formats]
        rows.append(
            {
                "engine": engine.name,
                "available": reason is None,
                "reason": reason,
                "formats": sorted({s.model_format for s in specs}),
                "quantizations": sorted({q for s in specs for q in s.quantizations}),
                "needs_gpu": engine.needs_gpu,
                # What `fleet launch ... --name value` (extra keys of the launch body) may set.
                "launch_options": describe_options(engine.options_model(family.model_type)),
            }
        )
    return rows


def xinference_engine_params(family: BaseFamily,
                             has_gpu: bool | None = None) -> dict[str, list[dict[str, Any]]]:
    """Xinference's `/v1/engines/{model_name}` shape: usable engines and their launch params,
    formats by Xinference's names (`ggufv2`), which its clients filter on and launches accept.
    (The shape has no room for the others; `?detailed=true` gives every engine and its reason.)"""
    result: dict[str, list[dict[str, Any]]] = {}
    for engine in sorted(ENGINES, key=lambda e: e.priority):
        if engine.why_not(family, has_gpu=has_gpu) is not None:
            continue
        result[engine.name] = [
            {
                "model_name": family.model_name,
                "model_format": xinference_format_name(spec.model_format),
                "model_size_in_billions": spec.model_size_in_billions,
                "quantizations": spec.quantizations,
            }
            for spec in family.model_specs
            if spec.model_format in engine.formats
        ]
    return result


@dataclass(frozen=True)
class EngineChoice:
    engine: EngineInfo
    spec: ModelSpec
    quantization: str
    # Why this engine: "requested", or "auto: gguf weights" and what was passed over.
    reason: str


def pick_engine(
    family: BaseFamily,
    requested: str | None,
    model_format: str | None,
    size: Any,
    quantization: str | None,
    has_gpu: bool | None = None,
) -> EngineChoice:
    """The engine, spec and quantization for a launch, and why; the best match when none is
    named. has_gpu: whether the machine(s) it may go to have a GPU (None: unknown)."""
    if requested:
        engine = engine_by_name(requested)
        if model_format is None:
            # `-en llama.cpp` alone means the family's GGUF variant, not its first one.
            runnable = [s.model_format for s in family.model_specs if s.model_format in engine.formats]
            model_format = runnable[0] if runnable else None
        spec, quant = select_spec(family, model_format, size, quantization)
        reason = engine.why_not(family, spec, has_gpu)
        if reason:
            raise BadRequest(f"engine {engine.name} cannot run {family.model_name}: {reason}")
        return EngineChoice(engine, spec, quant, "requested")
    spec, quant = select_spec(family, model_format, size, quantization)
    reasons = []
    passed_over: list[str] = []  # better-ranked engines that run the model but not here
    for engine in sorted(ENGINES, key=lambda e: e.priority):
        if engine.auto_only_on_gpu and not has_gpu:
            # Not a candidate here, installed or not: nothing to tell about it.
            reasons.append(f"{engine.name}: chosen automatically only on a GPU")
            continue
        unfit = engine.cannot_run(family, spec)
        missing = None if unfit else engine.unavailable(has_gpu)
        if unfit is None and missing is None:
            # What a better-ranked engine lacked is said only when it could run the model:
            # that it cannot run embeddings, say, is no news.
            why = f"auto: {spec.model_format} weights"
            return EngineChoice(engine, spec, quant, "; ".join([why, *passed_over]))
        reasons.append(f"{engine.name}: {unfit or missing}")
        if missing:
            passed_over.append(reasons[-1])
    raise BadRequest(
        f"no installed engine can run {family.model_name} ({spec.model_format}); "
        + "; ".join(reasons),
        code="no_engine",
    )

