"""The engine boundary is type-checked: every engine against its protocol of
fleet.engines.base, and the code around them, with mypy as configured in pyproject.toml
([tool.mypy]: which files, which untyped libraries)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _mypy_cache() -> Path:
    """Outside the checkout, per mypy and Python version, so that a fresh clone (CI's) starts
    warm: a cold run reads torch's and transformers' types, three minutes on 2 busy cores; a
    warm one, a few seconds. mypy takes a cached module only when its source's hash matches, so
    a cache written from another checkout or venv is used for what is unchanged and redone for
    the rest."""
    from mypy.version import __version__ as mypy_version

    base = Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))
    return base / f"mypy-{mypy_version}-py{sys.version_info[0]}.{sys.version_info[1]}"


def test_mypy_passes_on_the_engine_boundary():
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(_mypy_cache())],
                            cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"
