from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from fleet.catalogue.registry import builtin_families, parse_family
from fleet.engines import registry
from fleet.engines.registry import (
    engine_matrix,
    pick_engine,
    xinference_engine_params,
)
from fleet.errors import BadRequest


def choose_engine(*args):
    """(engine, spec, quantization) of pick_engine's choice."""
    choice = pick_engine(*args)
    return choice.engine, choice.spec, choice.quantization


def test_embedding_model_gets_sentence_transformers():
    family = builtin_families("embedding")["all-MiniLM-L6-v2"]
    engine, spec, quantization = choose_engine(family, None, None, None, None)
    assert engine.name == "sentence_transformers"
    assert spec.model_format == "pytorch" and quantization == "none"
    assert "sentence_transformers" in xinference_engine_params(family)


def test_engine_names_are_matched_loosely():
    family = builtin_families("embedding")["all-MiniLM-L6-v2"]
    engine, _, _ = choose_engine(family, "Sentence-Transformers", None, None, None)
    assert engine.name == "sentence_transformers"


def test_matrix_explains_why_an_engine_cannot_run_a_model():
    family = builtin_families("LLM")["qwen2.5-instruct"]
    rows = {r["engine"]: r for r in engine_matrix(family)}
    assert rows["sentence_transformers"]["available"] is False
    assert "embedding" in rows["sentence_transformers"]["reason"]


def test_an_llm_in_safetensors_gets_transformers():
    family = builtin_families("LLM")["qwen2.5-instruct"]
    engine, spec, _ = choose_engine(family, None, None, "0_5", None)
    assert engine.name == "transformers" and spec.model_format == "pytorch"


def test_no_engine_for_a_model_is_a_clear_400():
    family = parse_family("LLM", {"model_name": "only-gptq", "model_ability": ["chat"],
                                  "model_specs": [{"model_format": "gptq", "model_id": "x/y"}]})
    with pytest.raises(BadRequest, match="no installed engine") as info:
        choose_engine(family, None, None, None, None)
    assert "transformers: runs pytorch, safetensors weights, the model has gptq" in str(info.value)
    family = builtin_families("LLM")["qwen2.5-instruct"]
    with pytest.raises(BadRequest, match="cannot run"):
        choose_engine(family, "sentence_transformers", None, None, None)


@pytest.fixture
def with_gpu_engine(monkeypatch):
    """A vLLM-like declaration: Hugging Face folders, preferred over Transformers, GPU only."""
    gpu_engine = dataclasses.replace(registry.engine_by_name("transformers"), name="gpu-engine",
                                     priority=12, requires=(), needs_gpu=True)
    monkeypatch.setattr(registry, "ENGINES", (*registry.ENGINES, gpu_engine))
    return gpu_engine


def test_a_gpu_engine_is_chosen_only_where_there_is_a_gpu(with_gpu_engine):
    family = builtin_families("LLM")["qwen2.5-instruct"]
    on_gpu = pick_engine(family, None, "pytorch", "0_5", None, has_gpu=True)
    assert on_gpu.engine.name == "gpu-engine" and on_gpu.reason == "auto: pytorch weights"
    on_cpu = pick_engine(family, None, "pytorch", "0_5", None, has_gpu=False)
    assert on_cpu.engine.name == "transformers"
    assert on_cpu.reason == "auto: pytorch weights; gpu-engine: needs a GPU, the worker has none"
    with pytest.raises(BadRequest, match="needs a GPU, the worker has none"):
        pick_engine(family, "gpu-engine", "pytorch", "0_5", None, has_gpu=False)
    rows = {r["engine"]: r for r in engine_matrix(family, has_gpu=False)}
    assert rows["gpu-engine"]["reason"] == "needs a GPU, the worker has none"
    assert rows["gpu-engine"]["needs_gpu"] is True and rows["transformers"]["available"]
    assert "gpu-engine" not in xinference_engine_params(family, has_gpu=False)
    assert "gpu-engine" in xinference_engine_params(family, has_gpu=True)


def test_gguf_weights_go_to_llama_cpp_and_folders_to_transformers():
    family = builtin_families("LLM")["smollm2-instruct"]
    folder = pick_engine(family, None, "pytorch", None, None)
    assert folder.engine.name == "transformers" and folder.reason == "auto: pytorch weights"
    if importlib.util.find_spec("xllamacpp") is None:  # the [llama_cpp] extra is not installed
        with pytest.raises(BadRequest, match="llama.cpp: not installed"):
            pick_engine(family, None, "gguf", None, None)
        return
    gguf = pick_engine(family, None, "gguf", None, None)
    assert gguf.engine.name == "llama.cpp" and gguf.reason == "auto: gguf weights"
    assert pick_engine(family, "llama.cpp", "gguf", None, None).reason == "requested"


def test_a_named_engine_without_a_format_takes_the_variant_it_runs():
    family = builtin_families("LLM")["smollm2-instruct"]
    engine, spec, quantization = choose_engine(family, "llama.cpp", None, "0_135", None)
    assert engine.name == "llama.cpp" and spec.model_format == "gguf"
    engine, spec, _ = choose_engine(family, "transformers", None, "0_135", None)
    assert engine.name == "transformers" and spec.model_format == "pytorch"


@pytest.fixture
def vllm_installed(monkeypatch):
    """The real vLLM declaration, as on a machine where `import vllm` works."""
    installed = dataclasses.replace(registry.engine_by_name("vllm"), requires=())
    monkeypatch.setattr(registry, "ENGINES", tuple(installed if e.name == "vllm" else e
                                                    for e in registry.ENGINES))
    return installed


def test_vllm_is_the_automatic_choice_for_folders_on_a_gpu_only(vllm_installed):
    family = builtin_families("LLM")["qwen2.5-instruct"]
    assert pick_engine(family, None, "pytorch", "0_5", None, has_gpu=True).engine.name == "vllm"
    on_cpu = pick_engine(family, None, "pytorch", "0_5", None, has_gpu=False)
    assert (on_cpu.engine.name, on_cpu.reason) == ("transformers", "auto: pytorch weights")
    # Named, it runs on a CPU (vLLM's CPU build): nothing refuses it before the load.
    named = pick_engine(family, "vllm", "pytorch", "0_5", None, has_gpu=False)
    assert named.engine.name == "vllm" and named.reason == "requested"
    gguf = builtin_families("LLM")["smollm2-instruct"]
    with pytest.raises(BadRequest, match="runs pytorch, safetensors weights"):
        pick_engine(gguf, "vllm", "gguf", None, None, has_gpu=True)


def test_the_matrix_says_whether_vllm_is_installed_and_how_to_install_it():
    family = builtin_families("LLM")["qwen2.5-instruct"]
    rows = {r["engine"]: r for r in engine_matrix(family, has_gpu=True)}
    installed = importlib.util.find_spec("vllm") is not None  # the suite's venv has none
    assert rows["vllm"]["available"] is installed
    if not installed:
        assert "missing vllm" in rows["vllm"]["reason"] and "[vllm]" in rows["vllm"]["reason"]
    assert {o["name"] for o in rows["vllm"]["launch_options"]} >= {
        "gpu_memory_utilization", "tensor_parallel_size", "max_model_len", "cpu_kv_cache_gib"}


def test_vllm_cpu_binding_lists_cores_as_ranges():
    from fleet.engines.vllm_llm import cpu_list

    assert cpu_list([0, 1]) == "0-1"
    assert cpu_list([5, 0, 1, 2, 7, 8]) == "0-2,5,7-8"
    assert cpu_list([3]) == "3"
