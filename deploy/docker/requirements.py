"""Prints the requirements of Fleet's core and the given extras, one a line, read from
pyproject.toml: the image installs them in a layer of their own before Fleet's code, so that a
change to the code rebuilds only the layer that installs Fleet (Dockerfile).

    python3 requirements.py pyproject.toml transformers,llama-cpp

An extra may name others (`fleet-serve[a,b]`): they are followed. An unknown extra is an error,
so that a misspelt build argument fails the build rather than leave an engine out."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_SELF = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)\[(?P<extras>[^\]]+)\]\s*$")


def normalized(extra: str) -> str:
    """As pip compares extras: `llama_cpp` is `llama-cpp`."""
    return re.sub(r"[-_.]+", "-", extra.strip()).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: list[str] = list(project["dependencies"])
    seen: set[str] = set()
    pending = [normalized(e) for e in extras]
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"no extra {extra!r} in {pyproject}; there are: "
                             f"{', '.join(sorted(optional))}")
        seen.add(extra)
        for requirement in optional[extra]:
            own = _SELF.match(requirement)
            if own and own.group("name") == project["name"]:
                pending.extend(normalized(e) for e in own.group("extras").split(","))
            elif requirement not in found:
                found.append(requirement)
    return found


if __name__ == "__main__":
    names = [e.strip() for e in sys.argv[2].split(",") if e.strip()] if len(sys.argv) > 2 else []
    print("\n".join(requirements(Path(sys.argv[1]), names)))
