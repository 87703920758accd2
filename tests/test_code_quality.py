"""The codebase stays readable: ruff-clean, and no module grows past ~500 lines."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "fleet", "tests", "bench"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_module_is_too_long():
    long = [str(p.relative_to(ROOT)) for p in (ROOT / "fleet").rglob("*.py")
            if len(p.read_text().splitlines()) > 500]
    assert not long


def test_core_does_not_import_engines_at_start_up():
    code = ("import sys, fleet.cli.main, fleet.server, fleet.api.app, fleet.cluster.supervisor, "
            "fleet.cluster.worker; "
            "print(','.join(m for m in ('torch','transformers','sentence_transformers') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
