"""Two small real tokenizers, trained on the spot, for the detokenizer tests:
- byte-level BPE (GPT-2, Llama 3, Qwen): the leading space is part of the token (`Ġworld`) and a
  character missing from the vocabulary is split into byte tokens;
- SentencePiece-like BPE (Llama 2, Mistral): `▁` marks a space, the decoder strips the space at the
  very start of the text, and unknown characters fall back to `<0xNN>` byte tokens.
Both vocabularies are kept small, so most emoji and Hangul are left to byte tokens."""

from __future__ import annotations

import json
from typing import Any

import pytest

CORPUS = [
    "Hello world, this is a small corpus for a small tokenizer.",
    "Grüße aus München! Ça va? naïve café, déjà vu.",
    "日本語のテキストと中文文本",
    "def add(x, y):\n    return x + y\n",
    "The answer is 42. The weather in Paris is sunny.",
] * 10


def _wrap(tokenizer: Any, **special: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=False,
                                   **special)


@pytest.fixture(scope="session")
def byte_level_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tokenizer.train_from_iterator(CORPUS, trainer)
    return _wrap(tokenizer, eos_token="<|endoftext|>")


@pytest.fixture(scope="session")
def metaspace_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    def metaspace() -> Any:
        return pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")

    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = metaspace()
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300))
    model = json.loads(trained.to_str())["model"]
    # Rebuild it the way Llama 2's tokenizer.json is: <s>, </s>, 256 byte tokens, then the pieces.
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for piece in sorted(model["vocab"], key=model["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tokenizer.pre_tokenizer = metaspace()
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                           decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    return _wrap(tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
