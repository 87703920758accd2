"""What a local audio model's files are, so that the right engine runs them: a CTranslate2
conversion of Whisper (`model.bin` and a config without `architectures`: faster-whisper's
folders) is `ct2`, a Piper voice (`.onnx` and its `.onnx.json`, no Hugging Face config) is
`onnx`; anything else is left to the family's own formats (`pytorch`: a Transformers
checkpoint, Kokoro's folder)."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

CT2 = "ct2"
ONNX = "onnx"


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(parsed.path if parsed.scheme else uri).expanduser()


def is_ct2_folder(path: Path) -> bool:
    if not (path / "model.bin").is_file():
        return False
    config = path / "config.json"
    if not config.is_file():
        return True
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    # A Transformers config names its class; CTranslate2's holds only decoding settings.
    return isinstance(data, dict) and "architectures" not in data and "model_type" not in data


def local_audio_format(uri: str | None) -> str | None:
    """`ct2` or `onnx` for a local folder (or `.onnx` file) that is one; None otherwise, and
    for what is not visible from here."""
    path = _local_path(uri) if uri else None
    if path is None:
        return None
    if path.suffix.lower() == ".onnx":
        return ONNX
    if not path.is_dir():
        return None
    if is_ct2_folder(path):
        return CT2
    if not (path / "config.json").exists() and any(path.rglob("*.onnx.json")):
        return ONNX
    return None
