"""Schemathesis hooks of tests/e2e/test_openapi_fuzz.py (loaded through its configuration file).

Files in the multipart forms are `format: binary`, for which schemathesis draws random bytes as
often as a real file, while the image routes read PNG, JPEG and WebP only (as their encodings
say) and refuse anything else, rightly. Here every binary value is a small real image of one of
those types: the image routes read it, and the audio routes take any non-empty file (the
replica decodes it, past the routing that these runs stop at)."""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _image(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


schemathesis.openapi.format("binary", st.sampled_from([_image(f) for f in ("PNG", "JPEG", "WEBP")]))
