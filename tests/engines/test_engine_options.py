"""Every engine is built with its own typed launch options (fleet.engines.launch_options), as the
replica builds it (EngineInfo.typed_options), and loads nothing until `load`: a dict, another
engine's options or a misspelt option is an error, never passed on unread."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch

from fleet.catalogue.registry import parse_family
from fleet.catalogue.schemas import BaseFamily
from fleet.engines.base import EngineInfo, checked_options
from fleet.engines.launch_options import (
    LaunchOptions,
    LlamaCppEmbeddingOptions,
    LlamaCppLLMOptions,
    RapidOCROptions,
    validate_options,
)
from fleet.engines.registry import ENGINES, engine_by_name
from fleet.errors import BadRequest

IMPLEMENTATIONS = [(engine, model_type) for engine in ENGINES
                   for model_type in engine.implementations]
IDS = [f"{e.name}-{t}" for e, t in IMPLEMENTATIONS]


def _family(model_type: str, **fields: Any) -> BaseFamily:
    extra = {"embedding": {"dimensions": 8}, "rerank": {"type": "normal"}}.get(model_type, {})
    return parse_family(model_type, {
        "model_name": "options-check", **extra, **fields,
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1,
                         "quantizations": ["none"]}]})


def _build(engine_name: str, model_type: str, options: dict[str, Any], **family: Any) -> Any:
    """The engine as a replica builds it (fleet.cluster.replica.model_actor), on files that do not
    exist: building must not read them."""
    engine = engine_by_name(engine_name)
    return engine.load_class(model_type)("/nonexistent/weights", _family(model_type, **family),
                                         "cpu", engine.typed_options(model_type, options))


@pytest.mark.parametrize(("engine", "model_type"), IMPLEMENTATIONS, ids=IDS)
def test_each_engine_takes_its_options_model_and_loads_nothing_until_load(
        engine: EngineInfo, model_type: str, tmp_path: Path):
    model = engine.options_model(model_type)
    cls = engine.load_class(model_type)
    parameters = list(inspect.signature(cls.__init__).parameters.values())
    assert [p.name for p in parameters] == ["self", "model_path", "family", "device", "options"]
    assert parameters[-1].default is None
    family = _family(model_type)
    missing = str(tmp_path / "absent")  # loading anything from it would raise
    cls(missing, family, "cpu", model())
    cls(missing, family, "cpu", None)  # every default
    cls(missing, family, "cpu", options=model())


@pytest.mark.parametrize(("engine", "model_type"), IMPLEMENTATIONS, ids=IDS)
def test_a_dict_or_another_engines_options_is_a_type_error_naming_the_model(
        engine: EngineInfo, model_type: str):
    model = engine.options_model(model_type)
    cls = engine.load_class(model_type)
    family = _family(model_type)
    other = RapidOCROptions if model is not RapidOCROptions else LlamaCppLLMOptions
    for wrong in ({}, {"context_length": 512}, other(), LaunchOptions()):
        with pytest.raises(TypeError, match=f"must be {model.__name__} .*not {type(wrong).__name__}"):
            cls("/nonexistent/weights", family, "cpu", wrong)


def test_a_subclass_of_the_model_is_refused_too():
    # It would carry options the engine does not read, with no error.
    class Wider(LlamaCppEmbeddingOptions):
        pooling_window: int | None = None

    assert checked_options(None, LlamaCppEmbeddingOptions) == LlamaCppEmbeddingOptions()
    with pytest.raises(TypeError, match="LlamaCppEmbeddingOptions"):
        checked_options(Wider(pooling_window=3), LlamaCppEmbeddingOptions)


def test_typed_options_refuse_a_misspelt_option_as_launch_planning_does():
    with pytest.raises(BadRequest, match="unknown launch option 'n_ctxx'.*did you mean 'n_ctx'") as caught:
        engine_by_name("llama.cpp").typed_options("LLM", {"n_ctxx": 4096})
    assert caught.value.code == "unknown_launch_option" and caught.value.status_code == 400
    assert "engine llama.cpp (LLM models) takes:" in caught.value.message
    with pytest.raises(BadRequest, match="launch option poll:"):
        engine_by_name("llama.cpp").typed_options("LLM", {"poll": 101})


@pytest.mark.parametrize(("engine", "model_type", "options"), [
    ("llama.cpp", "LLM", {"n_parallel": "4", "n_ctx": "2048", "poll": 0}),
    ("llama.cpp", "embedding", {"pooling": "CLS"}),
    ("transformers", "LLM", {"torch_dtype": "torch.float16", "trust_remote_code": True}),
    ("diffusers", "image", {"cpu_offload": True}),
])
def test_the_options_a_launch_records_come_back_as_the_same_model(engine, model_type, options):
    info = engine_by_name(engine)
    model = info.options_model(model_type)
    recorded = validate_options(model, options, "here")  # what a launch request records
    typed = info.typed_options(model_type, recorded)
    assert type(typed) is model and typed == model.model_validate(options)
    assert typed.model_dump(exclude_none=True) == recorded


def test_options_with_two_names_keep_their_precedence():
    # llama.cpp: context_length over n_ctx, n_parallel over max_num_seqs; the family's otherwise.
    both = _build("llama.cpp", "LLM", {"context_length": 1024, "n_ctx": 2048,
                                       "n_parallel": 3, "max_num_seqs": 5}, context_length=4096)
    assert (both.context_length, both.n_parallel) == (1024, 3)
    second = _build("llama.cpp", "LLM", {"n_ctx": 2048, "max_num_seqs": 5}, context_length=4096)
    assert (second.context_length, second.n_parallel) == (2048, 5)
    neither = _build("llama.cpp", "LLM", {}, context_length=4096)
    assert (neither.context_length, neither.n_parallel) == (4096, 16)
    embedding = _build("llama.cpp", "embedding", {"n_ctx": 256, "pooling": "last"}, max_tokens=128)
    assert (embedding._max_tokens, embedding._pooling) == (256, 3)
    assert _build("llama.cpp", "embedding", {}, max_tokens=128)._max_tokens == 128
    # vLLM: context_length over max_model_len.
    vllm = _build("vllm", "LLM", {"context_length": 700, "max_model_len": 900, "max_num_seqs": 7})
    assert (vllm.context_length, vllm.max_num_seqs) == (700, 7)
    assert _build("vllm", "LLM", {"max_model_len": 900}).context_length == 900
    # dtype: Transformers LLMs and diffusers read torch_dtype first, Whisper reads dtype first.
    two = {"dtype": "float16", "torch_dtype": "bfloat16"}
    assert _build("transformers", "LLM", two)._dtype_name == "bfloat16"
    assert _build("diffusers", "image", two)._dtype == torch.bfloat16
    assert _build("transformers", "audio", two)._dtype == torch.float16


def test_unset_options_keep_the_catalogues_and_engines_defaults():
    rerank = _build("transformers", "rerank", {}, type="LLM-based", max_tokens=300,
                    rerank_zero_shot=True, trust_remote_code=True)
    assert (rerank._max_tokens, rerank._few_shot, rerank._trust_remote_code) == (300, False, True)
    chosen = _build("transformers", "rerank", {"zero_shot": False, "trust_remote_code": False,
                                               "max_tokens": 64}, type="LLM-based",
                    rerank_zero_shot=True, trust_remote_code=True)
    assert (chosen._max_tokens, chosen._few_shot, chosen._trust_remote_code) == (64, True, False)
    whisper = _build("faster-whisper", "audio", {})
    assert (whisper._vad, whisper._compute_type, whisper._cpu_threads) == (True, "default", 0)
    assert _build("faster-whisper", "audio", {"vad_filter": False})._vad is False
    piper = _build("piper", "audio", {})
    assert (piper._volume, piper._noise_scale) == (1.0, None)
    server = _build("llama.cpp", "LLM", {"n_threads": 3, "n_gpu_layers": 0})._options
    assert (server["threads"], server["poll"], server["gpu_layers"]) == (3, 0, 0)
