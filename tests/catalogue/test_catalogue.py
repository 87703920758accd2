from __future__ import annotations

import pytest

from fleet.catalogue.registry import Catalogue, builtin_families, select_spec
from fleet.catalogue.schemas import EmbeddingFamily, LLMFamily, normalize_model_type
from fleet.errors import BadRequest, NotFound
from tests.state_db import saved_family

REQUIRED = {
    "LLM": ["qwen2.5-instruct", "qwen3", "llama-3.1-instruct", "llama-3.2-instruct", "gemma-3-it",
            "mistral-instruct-v0.3", "phi-4", "deepseek-r1-distill-qwen", "smollm2-instruct"],
    "embedding": ["all-MiniLM-L6-v2", "bge-small-en-v1.5", "bge-base-en-v1.5",
                  "bge-large-en-v1.5", "bge-m3"],
    "rerank": ["bge-reranker-base", "bge-reranker-large", "bge-reranker-v2-m3",
               "jina-reranker-v2"],
}


@pytest.mark.parametrize("model_type", sorted(REQUIRED))
def test_builtin_catalogue_has_the_promised_families(model_type):
    families = builtin_families(model_type)
    missing = [name for name in REQUIRED[model_type] if name not in families]
    assert not missing
    for family in families.values():
        assert all(s.model_id for s in family.model_specs), family.model_name


def test_embedding_catalogue_covers_gte_e5_and_nomic():
    names = " ".join(builtin_families("embedding"))
    assert "gte" in names and "e5" in names and "nomic-embed" in names


# LLM families without a GGUF variant in the catalogue, and why: no GGUF of these vision models
# (weights and projector from one publisher) was verified, and InternVL3's GGUFs are of other
# checkpoints than its -hf ones; the 123B and 671B GGUFs come only in split parts, which the
# downloader does not fetch; no single-file GGUF of the Math and 1M Qwen variants was verified.
WITHOUT_GGUF = {"qwen2.5-vl-instruct", "qwen2-vl-instruct", "llama-3.2-vision-instruct", "MiniCPM-V-2.6",
                "glm-4.1v-thinking", "glm-4.5v", "InternVL3", "QvQ-72B-Preview",
                "mistral-large-instruct", "deepseek-v3", "deepseek-r1", "qwen2.5-math-instruct",
                "qwen2.5-instruct-1m"}


def test_llm_families_have_pytorch_specs_most_have_gguf_and_hub_ids():
    families = builtin_families("LLM")
    for family in families.values():
        formats = {s.model_format for s in family.model_specs}
        assert "pytorch" in formats, family.model_name
        assert family.context_length >= 2048
        gguf = [s for s in family.model_specs if s.model_format == "gguf"]
        assert all(s.model_file_name_template for s in gguf), family.model_name
    without = {name for name, family in families.items()
               if not any(s.model_format == "gguf" for s in family.model_specs)}
    assert without == WITHOUT_GGUF
    on_modelscope = [f for f in families.values() if any(s.modelscope_model_id for s in f.model_specs)]
    assert len(on_modelscope) >= 0.75 * len(families)


def test_xinference_custom_json_is_accepted():
    llm = LLMFamily.model_validate({
        "version": 2, "context_length": 2048, "model_name": "custom-llama",
        "model_lang": ["en"], "model_ability": ["generate"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 7,
                         "quantization": "none", "model_uri": "file:///models/llama"}],
    })
    assert llm.model_specs[0].quantizations == ["none"]
    flat = EmbeddingFamily.model_validate(
        {"model_name": "custom-bge", "dimensions": 768, "model_uri": "/models/bge"})
    assert flat.model_specs[0].model_uri == "/models/bge"


def test_register_persists_and_unregister_removes(registrations):
    catalogue = Catalogue(registrations)
    catalogue.register("embedding", {"model_name": "mine", "dimensions": 8, "model_uri": "/m"})
    saved = saved_family(registrations, "embedding", "mine")
    assert saved["dimensions"] == 8
    reloaded = Catalogue(registrations)
    assert reloaded.find("mine").model_type == "embedding"
    assert {"model_name": "mine", "is_builtin": False} in reloaded.list_registrations("embedding")
    reloaded.unregister("embedding", "mine")
    assert saved_family(registrations, "embedding", "mine") is None
    with pytest.raises(NotFound):
        reloaded.unregister("embedding", "mine")


def test_register_without_persist_is_not_written(registrations):
    catalogue = Catalogue(registrations)
    catalogue.register("embedding", {"model_name": "tmp", "dimensions": 8, "model_uri": "/m"},
                       persist=False)
    assert catalogue.find("tmp").model_name == "tmp"
    assert registrations.load() == []


@pytest.mark.parametrize("name", ["../escape", "a/b", " padded", ".hidden"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(BadRequest, match="model_name"):
        Catalogue().register("embedding", {"model_name": name, "dimensions": 8,
                                                   "model_uri": "/m"})


def test_unreadable_registration_is_skipped(registrations):
    registrations.save("embedding", "bad", {})
    assert "bad" not in Catalogue(registrations).families("embedding")


def test_select_spec_explains_what_exists():
    family = builtin_families("LLM")["smollm2-instruct"]
    spec, quantization = select_spec(family, "gguf", "0_135", "Q4_1")
    assert spec.model_format == "gguf" and quantization == "Q4_1"
    with pytest.raises(BadRequest, match="available"):
        select_spec(family, "awq", None, None)


def test_model_type_spelling():
    assert normalize_model_type("llm") == "LLM"
    assert normalize_model_type("Embedding") == "embedding"
    with pytest.raises(ValueError):
        normalize_model_type("video")


def test_a_name_is_measured_in_bytes_as_a_file_name_is(registrations):
    """200 `é` are 200 characters and 400 bytes: more than a file name takes (a cache folder
    is named after the model)."""
    catalogue = Catalogue(registrations)
    with pytest.raises(BadRequest, match="model_name is 400 bytes in UTF-8, more than 200"):
        catalogue.register("embedding", {"model_name": "é" * 200, "dimensions": 8,
                                         "model_uri": "/m"})
    catalogue.register("embedding", {"model_name": "é" * 100, "dimensions": 8, "model_uri": "/m"})
    assert saved_family(registrations, "embedding", "é" * 100) is not None
    assert "é" * 100 in Catalogue(registrations).families("embedding")  # read back at start


def test_every_cache_folder_of_a_family_fits_in_a_file_name():
    spec = {"model_format": "gguf", "model_size_in_billions": 7, "model_id": "x/y"}
    family = {"model_name": "n" * 120, "model_specs": [{**spec, "quantizations": ["q" * 128]}]}
    with pytest.raises(BadRequest, match=r"would be 256 bytes long, more than a file name may "
                                         r"be \(255\)"):
        Catalogue().register("LLM", family)
    family["model_specs"] = [{**spec, "quantizations": ["q" * 127]}]  # 255 bytes: fits
    Catalogue().register("LLM", family)


def test_the_cache_folder_is_named_as_the_check_measured_it():
    from fleet.catalogue.safe_names import cache_folder_name
    from fleet.cluster.weights.download import cache_folder

    family = builtin_families("LLM")["smollm2-instruct"]
    spec, quantization = select_spec(family, "gguf", "0_135", "Q4_1")
    assert cache_folder(family, spec, quantization).name == cache_folder_name(
        family.model_name, spec.model_format, spec.size_label, quantization)
    assert cache_folder(family, spec, quantization).name == "smollm2-instruct-gguf-0.135-Q4_1"
