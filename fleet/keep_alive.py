"""How long a model stays loaded without a request: its `keep_alive`, spelt as Ollama spells it.

A number is seconds; a string is a number with a unit (`500ms`, `30s`, `10m`, `1h`, `2h30m`, as
Go's durations that Ollama reads); a negative value (`-1`, `-1s`) is never; `0` unloads the model
as soon as its requests are answered. A model's replicas stop when it has had no request for
that long, and its next request loads it again (fleet.cluster.supervisor.elastic)."""

from __future__ import annotations

import math
import re

from fleet.errors import BadRequest

# Beyond a year a keep_alive means "never" spelt as a number: refused, so that it is said so.
MAX_KEEP_ALIVE_S = 366 * 24 * 3600.0
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_keep_alive(value: object) -> float | None:
    """Seconds, or None for never; BadRequest naming the value when it is not a duration."""
    seconds = _seconds(value)
    if seconds is None or seconds < 0:
        return None
    if seconds > MAX_KEEP_ALIVE_S:
        raise BadRequest(f"keep_alive {value!r} is longer than a year; use -1 for never",
                         code="invalid_keep_alive")
    return seconds


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):  # an int to Python, and no duration to anyone
        raise _refusal(value)
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise _refusal(value)
        return float(value)
    if not isinstance(value, str) or len(value) > 40:
        raise _refusal(value)
    text = value.strip().lower()
    sign = -1.0 if text.startswith("-") else 1.0
    text = text.removeprefix("-")
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return sign * float(text)
    parts = _PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise _refusal(value)
    return sign * sum(float(number) * _UNITS[unit] for number, unit in parts)


def _refusal(value: object) -> BadRequest:
    return BadRequest(f"keep_alive {value!r} is not a duration: give seconds (300), a duration "
                      "(30s, 10m, 1h, 1h30m) or -1 for never", code="invalid_keep_alive")


def describe_keep_alive(seconds: float | None) -> str:
    """For people: `never`, `45s`, `10m`, `1h30m`."""
    if seconds is None:
        return "never"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + \
        (f"{secs}s" if secs or not whole else "")
    return text
