"""The llama.cpp engine sizes its cache before it starts: a family that allows more context than
the GGUF file's model was trained for gets the file's, and llama.cpp starts once (it used to start,
read the trained context from the server, and start again)."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.catalogue.registry import parse_family
from fleet.engines.launch_options import LlamaCppLLMOptions
from fleet.engines.llamacpp_llm import LlamaCppLLM
from tests.builders import _smollm2_gguf

pytest.importorskip("xllamacpp")


def _family(context_length: int) -> Any:
    return parse_family("LLM", {"model_name": "smollm2-wide", "model_ability": ["chat"],
                                "context_length": context_length,
                                "model_specs": [{"model_format": "gguf",
                                                 "model_size_in_billions": 0.135,
                                                 "quantizations": ["Q4_1"]}]})


def _load_counting_starts(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> tuple[LlamaCppLLM, list[int]]:
    starts: list[int] = []
    original = LlamaCppLLM._start

    def counted(self: LlamaCppLLM, context: int) -> None:
        starts.append(context)
        original(self, context)

    monkeypatch.setattr(LlamaCppLLM, "_start", counted)
    engine = LlamaCppLLM(str(_smollm2_gguf()), _family(32768), "cpu",
                         LlamaCppLLMOptions(n_parallel=1, **kwargs))
    engine.load()
    return engine, starts


def test_a_family_context_beyond_the_trained_one_is_capped_before_llama_cpp_starts(monkeypatch):
    engine, starts = _load_counting_starts(monkeypatch)
    try:
        assert starts == [8192]  # SmolLM2-135M was trained for 8192 tokens
        assert engine.context_length == 8192
        assert engine.vocab_size == 49152
    finally:
        engine.close()


def test_a_context_the_launch_asks_for_is_kept(monkeypatch):
    engine, starts = _load_counting_starts(monkeypatch, context_length=1024)
    try:
        assert starts == [1024] and engine.context_length == 1024
    finally:
        engine.close()
