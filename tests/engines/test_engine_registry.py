from __future__ import annotations

import pytest

from fleet.catalogue.registry import builtin_families, parse_family
from fleet.engines.registry import choose_engine, engine_matrix, xinference_engine_params
from fleet.errors import BadRequest


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
