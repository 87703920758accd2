"""Amounts of memory as people write them: `2GiB`, `512MiB`, `1.5GB`, `2Gi`, or bytes.

Binary units (KiB, MiB, GiB, TiB, and Kubernetes' Ki, Mi, Gi, Ti) are powers of 1024, decimal
ones (KB, MB, GB, TB) powers of 1000, in any case. A bare `2G` or `2g` is refused: Docker reads
it as GiB and Kubernetes as GB, and a memory limit 7% off is one that does not hold."""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1,
          "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          **{f"{p}i{b}": 2**(10 * n) for n, p in enumerate("kmgt", 1) for b in ("", "b")}}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def parse_byte_size(text: str | int) -> int:
    """Bytes; ValueError naming the text when it is not an amount of memory."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    match = _SIZE.fullmatch(text) if isinstance(text, str) else None
    unit = match[2].lower() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(f"{text!r} is not an amount of memory: write bytes, or a number with "
                         "a unit (512MiB, 2GiB, 1.5GB, 2Gi)")
    return int(float(match[1]) * _UNITS[unit])
