"""What the built-in catalogue covers: the families Xinference users launch most, each with
hub ids that look like hub ids, GGUF file names that name a quantization, end-of-turn ids for
chat, and abilities in Xinference's words."""

from __future__ import annotations

import re

import pytest

from fleet.catalogue.registry import builtin_families

LLM = builtin_families("LLM")
EMBEDDING = builtin_families("embedding")
RERANK = builtin_families("rerank")
NAMED = {
    "LLM": ["qwen3", "qwen2.5-instruct", "qwen2.5-coder-instruct", "qwen2.5-vl-instruct",
            "qwen2.5-math-instruct", "QwQ-32B", "Qwen3-Instruct", "Qwen3-Thinking", "Qwen3-Coder",
            "llama-3-instruct", "llama-3.1-instruct", "llama-3.2-instruct", "llama-3.2-vision-instruct",
            "llama-3.3-instruct", "gemma-2-it", "gemma-3-1b-it", "gemma-3-it", "mistral-instruct-v0.3",
            "mistral-nemo-instruct", "mistral-small-3.1-instruct", "mixtral-instruct-v0.1", "phi-4",
            "phi-4-mini-instruct", "phi-3.5-mini-instruct", "deepseek-r1-distill-qwen",
            "deepseek-r1-distill-llama", "deepseek-v3", "deepseek-r1", "glm4-chat", "glm4-0414",
            "minicpm3-4b", "minicpm4", "MiniCPM-V-2.6", "internlm2.5-chat", "internlm3-instruct",
            "Yi-1.5-chat", "Qwen3-VL-Instruct", "Qwen3-VL-Thinking", "QvQ-72B-Preview", "qwen3.5",
            "glm-4.1v-thinking", "glm-4.5v", "InternVL3"],
    "embedding": ["bge-small-en-v1.5", "bge-base-en-v1.5", "bge-large-en-v1.5", "bge-m3",
                  "bge-large-zh-v1.5", "gte-base", "gte-large", "gte-Qwen2", "e5-large-v2",
                  "multilingual-e5-large", "jina-embeddings-v2-base-en", "jina-embeddings-v3",
                  "nomic-embed-text-v1.5", "Qwen3-Embedding-0.6B", "Qwen3-Embedding-4B",
                  "Qwen3-Embedding-8B", "mxbai-embed-large-v1"],
    "rerank": ["bge-reranker-base", "bge-reranker-large", "bge-reranker-v2-m3", "jina-reranker-v2",
               "jina-reranker-v1-turbo-en", "Qwen3-Reranker-0.6B", "Qwen3-Reranker-4B",
               "Qwen3-Reranker-8B"],
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
ABILITIES = {"chat", "generate", "tools", "vision", "reasoning", "audio", "hybrid"}


@pytest.mark.parametrize(("model_type", "at_least"), [("LLM", 40), ("embedding", 20), ("rerank", 8)])
def test_the_catalogue_covers_the_named_families(model_type, at_least):
    families = builtin_families(model_type)
    assert len(families) >= at_least
    assert [name for name in NAMED[model_type] if name not in families] == []


@pytest.mark.parametrize("families", [LLM, EMBEDDING, RERANK], ids=["LLM", "embedding", "rerank"])
def test_every_spec_names_its_weights_on_the_hubs(families):
    for family in families.values():
        for spec in family.model_specs:
            assert spec.model_id and HUB_ID.match(spec.model_id), (family.model_name, spec.model_id)
            ms = spec.modelscope_model_id
            assert ms is None or HUB_ID.match(ms), (family.model_name, ms)
            assert spec.quantizations, family.model_name


@pytest.mark.parametrize("families", [LLM, EMBEDDING], ids=["LLM", "embedding"])
def test_every_gguf_spec_names_one_file_per_quantization(families):
    for family in families.values():
        for spec in (s for s in family.model_specs if s.model_format == "gguf"):
            template = spec.model_file_name_template or ""
            split = getattr(spec, "model_file_name_split_template", None) or ""
            assert "{quantization}" in template or "{quantization}" in split, family.model_name
            names = {template.format(quantization=q) for q in spec.quantizations}
            assert len(names) == len(spec.quantizations)
            assert all(n.endswith(".gguf") and "{" not in n for n in names), names


def test_llm_specs_have_sizes_and_quantized_formats_name_their_quantization():
    for family in LLM.values():
        for spec in family.model_specs:
            assert spec.model_size_in_billions is not None, family.model_name
            float(spec.size_label)
            if spec.model_format in ("awq", "gptq"):
                assert spec.quantizations != ["none"], family.model_name


def test_chat_families_stop_on_their_end_of_turn_tokens():
    for family in LLM.values():
        assert "chat" in family.abilities, family.model_name
        assert family.stop_token_ids and family.stop, family.model_name
        # Fleet keeps a catalogue id only when the tokenizer spells it as one of the stop strings.
        assert len(family.stop_token_ids) <= len(family.stop), family.model_name


def test_abilities_use_xinferences_words_and_vision_models_say_so():
    for family in LLM.values():
        assert set(family.abilities) <= ABILITIES, family.model_name
    vision = {name for name, family in LLM.items() if "vision" in family.abilities}
    assert {"qwen2.5-vl-instruct", "llama-3.2-vision-instruct", "gemma-3-it", "MiniCPM-V-2.6",
            "mistral-small-3.1-instruct", "Qwen3-VL-Instruct", "Qwen3-VL-Thinking", "qwen3.5",
            "glm-4.1v-thinking", "glm-4.5v", "InternVL3", "QvQ-72B-Preview"} <= vision
    assert "gemma-3-1b-it" not in vision  # the 1B Gemma 3 reads text only


def test_embedding_dimensions_and_matryoshka_sizes():
    for family in EMBEDDING.values():
        assert family.dimensions >= 256 and family.max_tokens >= 128, family.model_name
        sizes = family.matryoshka_dimensions or []
        assert sizes == sorted(sizes) and all(s < family.dimensions for s in sizes), family.model_name
    assert EMBEDDING["Qwen3-Embedding-8B"].dimensions == 4096
    assert EMBEDDING["jina-embeddings-v2-base-en"].dimensions == 768


def test_rerankers_say_how_they_score():
    assert {f.type for f in RERANK.values()} == {"normal", "LLM-based"}
    assert all(RERANK[f"Qwen3-Reranker-{s}"].type == "LLM-based" for s in ("0.6B", "4B", "8B"))
    assert RERANK["bge-reranker-v2-m3"].type == "normal"
