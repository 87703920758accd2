"""Every engine Fleet knows, what each can run, and the automatic choice among them."""

from __future__ import annotations

from typing import Any

from fleet.catalogue.registry import select_spec
from fleet.catalogue.schemas import BaseFamily
from fleet.engines.base import EngineInfo
from fleet.errors import BadRequest

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
        pip_extra="sentence_transformers",
        rerank_kinds=("normal",),
    ),
    EngineInfo(
        name="transformers",
        implementations={
            "LLM": "fleet.engines.transformers_llm:TransformersLLM",
            "rerank": "fleet.engines.llm_rerank:LLMRerank",
        },
        formats=("pytorch", "safetensors"),
        abilities=("chat", "generate", "rerank"),
        requires=("torch", "transformers"),
        priority=20,
        pip_extra="transformers",
        rerank_kinds=("LLM-based",),
    ),
    EngineInfo(
        name="llama.cpp",
        implementations={"LLM": "fleet.engines.llamacpp_llm:LlamaCppLLM"},
        formats=("gguf",),
        abilities=("chat", "generate", "tools", "reasoning"),
        # xllamacpp: prebuilt CPU and GPU wheels of llama.cpp's server, with its parallel
        # slots (several sequences decoded together); see fleet/engines/llamacpp_llm.py.
        requires=("xllamacpp",),
        priority=5,
        pip_extra="llama_cpp",
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


def engine_matrix(family: BaseFamily) -> list[dict[str, Any]]:
    """One row per engine: whether it can run the family, and the reason when it cannot."""
    rows = []
    for engine in sorted(ENGINES, key=lambda e: e.priority):
        reason = engine.why_not(family)
        specs = [s for s in family.model_specs if s.model_format in engine.formats]
        rows.append(
            {
                "engine": engine.name,
                "available": reason is None,
                "reason": reason,
                "formats": sorted({s.model_format for s in specs}),
                "quantizations": sorted({q for s in specs for q in s.quantizations}),
            }
        )
    return rows


def xinference_engine_params(family: BaseFamily) -> dict[str, list[dict[str, Any]]]:
    """Xinference's `/v1/engines/{model_name}` shape: usable engines and their launch params."""
    result: dict[str, list[dict[str, Any]]] = {}
    for engine in sorted(ENGINES, key=lambda e: e.priority):
        if engine.why_not(family) is not None:
            continue
        result[engine.name] = [
            {
                "model_name": family.model_name,
                "model_format": spec.model_format,
                "model_size_in_billions": spec.model_size_in_billions,
                "quantizations": spec.quantizations,
            }
            for spec in family.model_specs
            if spec.model_format in engine.formats
        ]
    return result


def choose_engine(
    family: BaseFamily,
    requested: str | None,
    model_format: str | None,
    size: Any,
    quantization: str | None,
) -> tuple[EngineInfo, Any, str]:
    """The engine, spec and quantization for a launch; the best match when none is named."""
    spec, quant = select_spec(family, model_format, size, quantization)
    if requested:
        engine = engine_by_name(requested)
        reason = engine.why_not(family, spec)
        if reason:
            raise BadRequest(f"engine {engine.name} cannot run {family.model_name}: {reason}")
        return engine, spec, quant
    reasons = []
    for engine in sorted(ENGINES, key=lambda e: e.priority):
        reason = engine.why_not(family, spec)
        if reason is None:
            return engine, spec, quant
        reasons.append(f"{engine.name}: {reason}")
    raise BadRequest(
        f"no installed engine can run {family.model_name} ({spec.model_format}); "
        + "; ".join(reasons),
        code="no_engine",
    )
