"""Xinference 4.1.0's names and family files, read by Fleet with the same meaning: `ggufv2` is
`gguf` wherever a format enters; registration specs (per hub and quantization) and catalogue
specs (`model_src`) become Fleet's specs with both hub ids and every quantization; a custom LLM
borrows its model_family's chat formatting; rerank type "unknown" is Xinference's fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.catalogue.registry import Catalogue, builtin_families, select_spec
from fleet.catalogue.schemas import EmbeddingFamily, LLMFamily, ModelSpec, RerankFamily
from fleet.catalogue.xinference_format import canonical_format, convert_specs
from fleet.engines.registry import pick_engine, xinference_engine_params
from fleet.errors import BadRequest
from fleet.launch_request import LaunchRequest
from tests.state_db import saved_family
from tests.xinference_files import (
    CHATML,
    SMOL_HF,
    SMOL_MS,
    SMOL_TEMPLATE,
    embedding_registration,
    llm_catalogue_entry,
    llm_registration,
    rerank_registration,
)

GGUF_DIR = Path("/models/smol")


@pytest.mark.parametrize(("given", "expected"), [
    ("ggufv2", "gguf"), ("GGUFv2", "gguf"), (" gguf ", "gguf"), ("pytorch", "pytorch"),
    ("GPTQ", "gptq"),
])
def test_canonical_format(given, expected):
    assert canonical_format(given) == expected


def test_ggufv2_is_gguf_in_specs_launch_bodies_and_spec_choice():
    assert ModelSpec(model_format="ggufv2").model_format == "gguf"
    assert LaunchRequest(model_name="x", model_format="GGUFV2").model_format == "gguf"
    assert LaunchRequest(model_name="x").model_format is None
    family = builtin_families("LLM")["smollm2-instruct"]
    spec, quantization = select_spec(family, "ggufv2", "0_135", "Q4_1")
    assert (spec.model_format, quantization) == ("gguf", "Q4_1")
    choice = pick_engine(family, "llama.cpp", "ggufv2", None, "Q8_0")
    assert (choice.spec.model_format, choice.quantization) == ("gguf", "Q8_0")


def test_an_unknown_format_is_still_refused_with_what_exists():
    family = builtin_families("LLM")["smollm2-instruct"]
    with pytest.raises(BadRequest, match=r"no variant with format=ggufv3.*gguf 0\.135B"):
        select_spec(family, "ggufv3")


def test_instances_and_estimate_are_reserved_uids():
    for uid in ("instances", "estimate"):
        with pytest.raises(ValueError, match="reserved"):
            LaunchRequest(model_name="x", model_uid=uid)


def test_xinference_launch_options_without_a_counterpart_are_refused_not_dropped():
    # What Xinference's clients always send passes.
    LaunchRequest(model_name="x", n_worker=1, peft_model_config=None, replica_config=None,
                  enable_virtual_env=None, virtual_env_packages=None, trust_remote_code=True)
    for option, fragment in (
            ({"peft_model_config": {"lora_list": [{"lora_name": "a", "local_path": "/a"}]}},
             "LoRA adapters"),
            ({"replica_config": [{"devices": [{"worker_ip": "w:1"}]}]}, "per-replica placement"),
            ({"quantization_config": {"load_in_4bit": True}}, "quantizing weights at load"),
            ({"enable_virtual_env": True}, "virtual environment"),
            ({"n_worker": 2}, "one worker")):
        with pytest.raises(ValueError, match=fragment):
            LaunchRequest(model_name="x", **option)


def test_xinference_shaped_engine_answer_says_ggufv2():
    params = xinference_engine_params(builtin_families("LLM")["smollm2-instruct"])
    assert {p["model_format"] for p in params["llama.cpp"]} == {"ggufv2"}
    assert {p["model_format"] for p in params["transformers"]} == {"pytorch"}


def test_registration_specs_per_hub_and_quantization_become_one_variant():
    family = LLMFamily.model_validate(llm_registration("my-smol", GGUF_DIR))
    [spec] = family.model_specs
    assert spec.model_format == "gguf"
    assert spec.quantizations == ["Q4_1", "Q8_0"]
    assert (spec.model_id, spec.modelscope_model_id) == (SMOL_HF, SMOL_MS)
    assert spec.model_file_name_template == SMOL_TEMPLATE
    assert spec.model_uri == f"file://{GGUF_DIR}"
    assert spec.size_label == "0.135"
    # Xinference's nulls leave Fleet's defaults; its empty stop lists stay empty.
    assert family.context_length == 2048 and family.stop == [] and family.chat_template is None
    assert family.model_family == "smollm2-instruct"


def test_catalogue_specs_with_model_src_keep_every_hub():
    family = LLMFamily.model_validate(llm_catalogue_entry("smol-catalogue"))
    pytorch, gguf = family.model_specs
    assert (pytorch.model_format, pytorch.quantizations) == ("pytorch", ["none"])
    assert pytorch.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert pytorch.modelscope_model_id == "AI-ModelScope/SmolLM2-135M-Instruct"
    assert pytorch.model_extra["modelscope_model_revision"] == "master"
    assert pytorch.model_revision is None
    assert (gguf.model_format, gguf.quantizations) == ("gguf", ["Q4_1", "Q8_0"])
    assert (gguf.model_id, gguf.modelscope_model_id) == (SMOL_HF, SMOL_MS)
    # The mirror names its files differently: kept, not mixed into Hugging Face's template.
    assert gguf.model_file_name_template == SMOL_TEMPLATE
    assert gguf.model_extra["modelscope_model_file_name_template"] == "smollm2-{quantization}.gguf"
    assert "model_src" not in gguf.model_extra
    assert family.chat_template == CHATML and family.stop == ["<|im_end|>"]
    assert family.stop_token_ids == [2]


def test_a_templated_hub_id_becomes_one_spec_per_quantization():
    specs = convert_specs([{"model_format": "gptq", "model_size_in_billions": 7, "model_src": {
        "huggingface": {"model_id": "Org/M-GPTQ-{quantization}", "quantizations": ["Int4", "Int8"]},
        "modelscope": {"model_id": "org/M-GPTQ-{quantization}", "quantizations": ["Int4", "Int8"]},
    }}])
    assert [(s["quantizations"], s["model_id"], s["modelscope_model_id"]) for s in specs] == [
        (["Int4"], "Org/M-GPTQ-Int4", "org/M-GPTQ-Int4"),
        (["Int8"], "Org/M-GPTQ-Int8", "org/M-GPTQ-Int8"),
    ]


def test_a_modelscope_only_source_keeps_its_id_out_of_model_id():
    [spec] = convert_specs([{"model_format": "pytorch", "model_size_in_billions": 1, "model_src": {
        "modelscope": {"model_id": "qwen/Q", "quantizations": ["none"]}}}])
    assert "model_id" not in spec and spec["modelscope_model_id"] == "qwen/Q"


def test_flattened_specs_with_different_files_stay_apart_and_hugging_face_comes_first():
    specs = convert_specs([
        {"model_format": "ggufv2", "model_size_in_billions": 1, "quantization": "Q4_K_M",
         "model_hub": "modelscope", "model_id": "ms/M", "model_file_name_template": "m-q4.gguf"},
        {"model_format": "ggufv2", "model_size_in_billions": 1, "quantization": "Q4_K_M",
         "model_hub": "huggingface", "model_id": "hf/M", "model_file_name_template": "M.Q4.gguf"},
        {"model_format": "ggufv2", "model_size_in_billions": 1, "quantization": "Q8_0",
         "model_hub": "huggingface", "model_id": "hf/M", "model_file_name_template": "M.Q8.gguf"},
    ])
    assert [(s.get("model_id"), s.get("modelscope_model_id"), s["quantizations"]) for s in specs] == [
        ("hf/M", None, ["Q4_K_M"]), ("hf/M", None, ["Q8_0"]), (None, "ms/M", ["Q4_K_M"])]
    family = LLMFamily(model_name="m", model_specs=specs)
    spec, _ = select_spec(family, "ggufv2", 1, "Q8_0")
    assert spec.model_file_name_template == "M.Q8.gguf"


def test_fleet_shaped_families_read_dumped_and_read_again_are_unchanged():
    for data in (llm_registration("a", GGUF_DIR), llm_catalogue_entry("b")):
        once = LLMFamily.model_validate(data).model_dump(mode="json", exclude_none=True)
        assert LLMFamily.model_validate(once).model_dump(mode="json", exclude_none=True) == once
    for name, family in builtin_families("LLM").items():
        dumped = family.model_dump(mode="json", exclude_none=True)
        assert LLMFamily.model_validate(dumped) == family, name


def test_embedding_and_rerank_registrations():
    embedding = EmbeddingFamily.model_validate(embedding_registration("e", Path("/m/minilm")))
    [spec] = embedding.model_specs
    assert (embedding.dimensions, embedding.max_tokens, embedding.language) == (384, 256, ["en"])
    assert (spec.model_format, spec.quantizations) == ("pytorch", ["none"])
    assert spec.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert spec.model_uri == "/m/minilm"
    rerank = RerankFamily.model_validate(rerank_registration("r", Path("/m/ce")))
    [spec] = rerank.model_specs
    assert (rerank.type, rerank.max_tokens, rerank.language) == ("normal", 512, ["en", "zh"])
    assert spec.model_id is None and spec.modelscope_model_id == "tiny/cross-encoder"
    assert RerankFamily.model_validate({**rerank_registration("r", Path("/m")),
                                        "type": "LLM-based"}).type == "LLM-based"


def test_a_file_cannot_claim_to_be_built_in():
    catalogue = Catalogue()
    catalogue.register("embedding", {**embedding_registration("e", Path("/m")), "is_builtin": True})
    assert catalogue.describe_registration("embedding", "e")["is_builtin"] is False
    [row] = [r for r in catalogue.list_registrations("embedding", detailed=True)
             if r["model_name"] == "e"]
    assert row["is_builtin"] is False


def test_registration_borrows_the_model_familys_chat_formatting_and_persists_it(registrations):
    catalogue = Catalogue(registrations)
    catalogue.register("LLM", llm_registration("my-smol", GGUF_DIR))
    smol = builtin_families("LLM")["smollm2-instruct"]
    family = catalogue.find("my-smol", "LLM")
    assert (family.stop, family.stop_token_ids) == (smol.stop, smol.stop_token_ids)
    assert family.chat_template == smol.chat_template  # null: the one its weights carry
    saved = saved_family(registrations, "LLM", "my-smol")
    assert saved["stop_token_ids"] == smol.stop_token_ids
    assert saved["model_specs"][0]["model_format"] == "gguf"
    assert Catalogue(registrations).find("my-smol", "LLM") == family


def test_a_chat_template_naming_a_built_in_family_means_its_formatting():
    catalogue = Catalogue()
    qwen = builtin_families("LLM")["qwen2.5-instruct"]
    data = {**llm_registration("named", GGUF_DIR), "chat_template": "qwen2.5-instruct",
            "stop": ["<|custom|>"]}
    family = catalogue.register("LLM", data, persist=False)
    # The family's template (or its null: the weights' own), never the name as if it were one
    # (it would be rendered as the prompt).
    assert family.chat_template == qwen.chat_template != "qwen2.5-instruct"
    assert family.stop == ["<|custom|>"]  # the file's own stops win over the family's
    assert family.stop_token_ids == qwen.stop_token_ids


def test_a_jinja_template_is_kept_and_an_unknown_name_is_refused():
    catalogue = Catalogue()
    own = catalogue.register("LLM", {**llm_registration("jinja", GGUF_DIR),
                                     "chat_template": CHATML}, persist=False)
    assert own.chat_template == CHATML
    with pytest.raises(BadRequest, match="neither a Jinja template nor the name"):
        catalogue.register("LLM", {**llm_registration("bad", GGUF_DIR),
                                   "chat_template": "no-such-family"}, persist=False)


def test_an_unknown_model_family_leaves_the_weights_own_template():
    data = {**llm_registration("elsewhere", GGUF_DIR), "model_family": "not-a-family-here"}
    family = Catalogue().register("LLM", data, persist=False)
    assert family.chat_template is None and family.stop == []
    assert family.model_family == "not-a-family-here"


def _v1_gguf(spec: dict) -> dict:
    """A custom LLM in Xinference's older (version 1) file shape, with one GGUF spec."""
    return {"version": 1, "context_length": 2048, "model_name": "v1-smol", "model_lang": ["en"],
            "model_ability": ["chat"], "model_family": "other",
            "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": "0_135",
                             "model_uri": f"file://{GGUF_DIR}/model.gguf", **spec}]}


@pytest.mark.parametrize(("spec", "quantizations", "ids"), [
    # The list form older files write, one entry or several.
    ({"quantization": ["q8_0"]}, ["q8_0"], (None, None)),
    ({"quantization": ["Q4_1", "Q8_0"], "model_hub": "huggingface", "model_id": SMOL_HF},
     ["Q4_1", "Q8_0"], (SMOL_HF, None)),
    ({"quantization": ["Q4_1"], "model_hub": "modelscope", "model_id": SMOL_MS},
     ["Q4_1"], (None, SMOL_MS)),
    # Version 1's own `quantizations` list, with and without a hub.
    ({"quantizations": ["Q4_1", "Q8_0"], "model_id": SMOL_HF}, ["Q4_1", "Q8_0"], (SMOL_HF, None)),
    ({"quantizations": ["Q4_1"], "model_hub": "modelscope", "model_id": SMOL_MS},
     ["Q4_1"], (None, SMOL_MS)),
    # Both, saying the same.
    ({"quantization": "Q4_1", "quantizations": ["Q4_1"]}, ["Q4_1"], (None, None)),
])
def test_older_quantization_forms_are_read(spec, quantizations, ids):
    family = Catalogue().register("LLM", _v1_gguf(spec), persist=False)
    [read] = family.model_specs
    assert read.quantizations == quantizations
    assert (read.model_id, read.modelscope_model_id) == ids
    assert "quantization" not in read.model_extra


@pytest.mark.parametrize(("spec", "message"), [
    ({"quantization": 8}, "model_specs.0: Value error, quantization must be a name such as "
                          "'Q4_K_M' or a non-empty list of names, not 8"),
    ({"quantization": []}, "quantization must be a name such as 'Q4_K_M' or a non-empty list"),
    ({"quantization": ["q8_0", 4]}, "not ['q8_0', 4]"),
    ({"quantization": ["../q8_0"]}, "model_specs.0: Value error, quantization '../q8_0' is not "
                                    "a safe name"),
    ({"quantization": "Q4_1", "quantizations": ["Q8_0"]},
     "quantization 'Q4_1' and quantizations ['Q8_0'] disagree"),
])
def test_a_wrong_quantization_is_refused_under_the_name_written(spec, message):
    with pytest.raises(BadRequest) as refused:
        Catalogue().register("LLM", _v1_gguf(spec), persist=False)
    assert message in refused.value.message
    if "quantizations" not in spec:
        assert "quantizations" not in refused.value.message
