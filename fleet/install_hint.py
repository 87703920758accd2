"""The pip command that adds an extra to the Fleet a user is running.

Fleet is installed from a clone of its repository, so `pip install fleet-serve` with an extra would send a
user to a package index that does not have it. When the running code sits in a source tree (its
pyproject.toml beside the package), the hint installs that tree again with the extra, through its
constraints file as the README does."""

from __future__ import annotations

import shlex
from functools import cache
from pathlib import Path

import fleet


@cache
def source_tree() -> Path | None:
    """The checkout that the running Fleet was installed from (editable), or None."""
    root = Path(fleet.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    try:
        if 'name = "fleet-serve"' in pyproject.read_text(encoding="utf-8"):
            return root
    except OSError:
        pass
    return None


def pip_install_extra(extra: str) -> str:
    """A command a user can paste; extras are named as the built metadata spells them."""
    root = source_tree()
    if root is None:
        return f"pip install 'fleet-serve[{extra}]'"
    constraints = root / "constraints.txt"
    pin = f"-c {shlex.quote(str(constraints))} " if constraints.is_file() else ""
    return f"pip install {pin}-e {shlex.quote(f'{root}[{extra}]')}"
