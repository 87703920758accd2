"""The engine boundary is type-checked: every engine against its protocol of
fleet.engines.base, and the code around them, with mypy as configured in pyproject.toml
([tool.mypy]: which files, which untyped libraries)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_passes_on_the_engine_boundary():
    # The cache (.mypy_cache, in the checkout) makes later runs take a second or two; a cold
    # one reads torch's and transformers' types, about 40 s on 2 cores.
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"
