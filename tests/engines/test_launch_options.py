"""Typed launch options: each engine implementation declares the options it reads, and a launch
that names any other (or a wrong value) is a 400 that names it."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

from fleet.engines.launch_options import LaunchOptions, describe_options, validate_options
from fleet.engines.registry import ENGINES, engine_by_name
from fleet.errors import BadRequest

IMPLEMENTATIONS = [(engine, model_type) for engine in ENGINES
                   for model_type in engine.implementations]
# Options read outside the implementation's own module: the llama.cpp helper every llama.cpp
# engine calls, the replica's LLM scheduler, and the remote-code switch of fleet.engines.base.
_SHARED_READERS = {"engine_options(": "fleet.engines.llamacpp_server",
                   "wants_remote_code(": "fleet.engines.base"}
_LLM_SERVICE = "fleet.cluster.replica.services.llm"
# Replica services that read launch options of the engines they serve (batch sizes).
_SERVICE_READERS = {("diffusers", "image"): "fleet.cluster.replica.services.image",
                    ("faster-whisper", "audio"): "fleet.cluster.replica.services.transcription",
                    ("transformers", "audio"): "fleet.cluster.replica.services.transcription"}
_READ = re.compile(r"""kwargs\.get\(\s*["'](\w+)["']|options\.get\(\s*["'](\w+)["']"""
                   # a typed model's fields (fleet.engines.vllm_llm), not its methods
                   r"""|(?<!\w)_?options\.(?!get\b)([a-z_]+)\b(?!\()""")


def _options_read(engine, model_type: str) -> set[str]:
    module = importlib.import_module(engine.implementations[model_type].split(":")[0])
    sources = [inspect.getsource(module)]
    sources += [inspect.getsource(importlib.import_module(name))
                for call, name in _SHARED_READERS.items() if call in sources[0]]
    if model_type == "LLM":
        sources.append(inspect.getsource(importlib.import_module(_LLM_SERVICE)))
    if (engine.name, model_type) in _SERVICE_READERS:
        service = _SERVICE_READERS[engine.name, model_type]
        sources.append(inspect.getsource(importlib.import_module(service)))
    names = {a or b or c for source in sources for a, b, c in _READ.findall(source)}
    return names - {"request_limits"}  # a launch field, handed to the scheduler separately


@pytest.mark.parametrize(("engine", "model_type"), IMPLEMENTATIONS,
                         ids=[f"{e.name}-{t}" for e, t in IMPLEMENTATIONS])
def test_each_implementation_declares_exactly_the_options_it_reads(engine, model_type):
    model = engine.options_model(model_type)
    assert model is not LaunchOptions, f"{engine.name} declares no options for {model_type}"
    # Options accepted for compatibility and read by nothing say so in their declaration.
    used = {name for name, field in model.model_fields.items()
            if not (field.json_schema_extra or {}).get("unused")}
    assert _options_read(engine, model_type) == used
    for row in describe_options(model):
        assert row["help"] and row["type"], row


def _check(engine: str, model_type: str, options: dict) -> dict:
    return validate_options(engine_by_name(engine).options_model(model_type), options,
                            f"engine {engine} ({model_type} models)")


def test_an_unknown_option_is_named_with_the_engines_options():
    with pytest.raises(BadRequest) as caught:
        _check("llama.cpp", "LLM", {"n_ctxx": 4096})
    message = caught.value.message
    assert "unknown launch option 'n_ctxx'" in message and "did you mean 'n_ctx'" in message
    assert ("context_length, enable_thinking, image_max_tokens, image_min_tokens, max_num_seqs, "
            "multimodal_projector, n_ctx, n_gpu_layers, n_parallel") in message
    assert caught.value.code == "unknown_launch_option" and caught.value.status_code == 400


@pytest.mark.parametrize(("engine", "model_type", "option"), [
    ("llama.cpp", "LLM", "pooling"),  # an embedding option, not a chat one
    ("llama.cpp", "embedding", "trust_remote_code"),  # GGUF files carry no code
    ("sentence_transformers", "embedding", "context_length"),
    ("transformers", "LLM", "device"),  # the worker chooses the device
    ("transformers", "LLM", "cache_type_k"),
])
def test_options_of_other_engines_are_unknown_here(engine, model_type, option):
    with pytest.raises(BadRequest, match=f"unknown launch option '{option}'"):
        _check(engine, model_type, {option: "1"})


@pytest.mark.parametrize(("engine", "model_type", "options", "field"), [
    ("llama.cpp", "LLM", {"n_parallel": 1000}, "n_parallel"),
    ("llama.cpp", "LLM", {"max_num_seqs": 257}, "max_num_seqs"),
    ("llama.cpp", "LLM", {"context_length": "many"}, "context_length"),
    ("llama.cpp", "LLM", {"poll": 101}, "poll"),
    ("llama.cpp", "embedding", {"pooling": "max"}, "pooling"),
    ("transformers", "LLM", {"dtype": "int3"}, "dtype"),
    ("transformers", "LLM", {"max_num_seqs": 0}, "max_num_seqs"),
    ("transformers", "rerank", {"zero_shot": "perhaps"}, "zero_shot"),
    ("sentence_transformers", "rerank", {"max_tokens": -5}, "max_tokens"),
])
def test_wrong_types_and_ranges_are_400s_naming_the_option(engine, model_type, options, field):
    with pytest.raises(BadRequest, match=f"launch option {field}:") as caught:
        _check(engine, model_type, options)
    assert caught.value.code == "invalid_launch_option"


def test_values_are_coerced_once_for_the_engine():
    # A query string or `fleet launch --name value` gives strings.
    assert _check("llama.cpp", "LLM", {"n_parallel": "4", "context_length": "2048"}) == {
        "n_parallel": 4, "context_length": 2048}
    assert _check("llama.cpp", "embedding", {"pooling": "MEAN"}) == {"pooling": "mean"}
    assert _check("transformers", "LLM", {"torch_dtype": "torch.float16", "dtype": "bf16"}) == {
        "torch_dtype": "float16", "dtype": "bfloat16"}
    assert _check("transformers", "rerank", {"zero_shot": "true"}) == {"zero_shot": True}
    assert _check("sentence_transformers", "embedding", {}) == {}
