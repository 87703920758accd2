"""Paths built from names that arrive over the API (a registered spec's format, size and
quantization, its file-name templates) and the roots they must stay under.

Two different questions, two kinds of check:
- a name joined under a root Fleet owns (the weights cache) must stay under it *as written*:
  `inside` normalises `..` and refuses absolute parts, but follows no link, since a cache entry
  that the operator linked elsewhere on purpose is still theirs;
- a path a request names (a launch's model_path) is allowed or not by where it really leads:
  `within` resolves links and `..` first, so a link under an allowed root that points outside
  is outside."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from fleet.errors import BadRequest

# One file or folder name: letters, digits, '.', '_' and '-', starting with a letter or a digit
# (no hidden names, nothing an option parser could take for a flag), never '..'.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_SEGMENT = 128
SAFE_NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, without '..'"


def is_safe_segment(value: str) -> bool:
    return (len(value) <= MAX_SEGMENT and _SEGMENT.fullmatch(value) is not None
            and ".." not in value)


def safe_segment(value: str, what: str) -> str:
    """`value` when it is one plain name; ValueError (a pydantic validator's refusal) naming
    `what` otherwise."""
    if not isinstance(value, str) or not is_safe_segment(value):
        raise ValueError(f"{what} {value!r} is not a safe name: {SAFE_NAME_RULE} "
                         f"(at most {MAX_SEGMENT} characters)")
    return value


def safe_relative_file(value: str, what: str, max_depth: int = 3) -> str:
    """A relative file path of plain names separated by '/' (a GGUF repository may keep a
    quantization's parts in a subfolder); ValueError otherwise."""
    parts = value.split("/")
    if len(parts) > max_depth or not all(is_safe_segment(p) for p in parts):
        raise ValueError(f"{what} {value!r} must be a file name, or a relative path of at most "
                         f"{max_depth} names separated by '/', each of {SAFE_NAME_RULE}")
    return value


def inside(root: Path, *parts: str) -> Path:
    """`root/parts...`, known to lie strictly below `root`: BadRequest when `..` or an absolute
    part would take it elsewhere. Lexical: links are not followed (see the module docstring)."""
    base = Path(os.path.normpath(root))
    joined = Path(os.path.normpath(base.joinpath(*parts)))
    if base not in joined.parents:
        shown = "/".join(parts)
        raise BadRequest(f"{shown!r} leads outside {str(base)!r}", code="unsafe_path")
    return joined


def real(path: str | Path) -> Path:
    """The path with `~`, `..` and every link resolved (as far as it exists)."""
    return Path(os.path.realpath(Path(path).expanduser()))


def within(path: str | Path, roots: Iterable[str | Path]) -> bool:
    """Whether `path`, once resolved, is one of `roots` (resolved too) or lies below one."""
    resolved = real(path)
    for root in roots:
        base = real(root)
        if resolved == base or base in resolved.parents:
            return True
    return False
