"""The README's shell blocks, read the way a user reads them, so tests run its commands as written
and cannot drift from them."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def bash_blocks(heading: str) -> list[str]:
    """The ```bash blocks of the README section that starts with `heading`, in order."""
    text = README.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end != -1 else len(text)]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def commands(block: str) -> list[str]:
    """A block's command lines, comments and blank lines left out."""
    lines = []
    for line in block.splitlines():
        code = line.split("  #")[0].rstrip() if "  #" in line else line.rstrip()
        if code and not code.lstrip().startswith("#"):
            lines.append(code)
    return lines
