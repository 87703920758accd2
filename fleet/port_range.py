"""A range of ports an operator gives on the command line ("30000-30099"), for the ports a
firewall or a NetworkPolicy must open (fleet worker --replica-ports)."""

from __future__ import annotations

import re

_RANGE = re.compile(r"^\s*(\d{1,5})\s*-\s*(\d{1,5})\s*$")


def parse_port_range(text: str) -> tuple[int, int]:
    """"30000-30099" -> (30000, 30099). Below 1024 needs root, which Fleet's image never has;
    a range must hold at least one pair (a replica process takes two ports)."""
    match = _RANGE.match(text)
    if not match:
        raise ValueError(f"a port range is START-END (30000-30099), not {text!r}")
    first, last = int(match.group(1)), int(match.group(2))
    if not 1024 <= first <= last <= 65535:
        raise ValueError(f"ports {first}-{last}: a range lies within 1024-65535, START <= END")
    if last - first + 1 < 2:
        raise ValueError(f"ports {first}-{last}: each replica process needs two ports")
    return first, last
