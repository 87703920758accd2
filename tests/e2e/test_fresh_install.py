"""A new user's first minutes, as the README tells them: a virtual environment made by Python's
own `venv` with the pip it ships (not upgraded), the README's first command (install with the
embedding engine, then `fleet local`), then the offline quick start, typed as written.

pip's output must carry no warning: the bug this guards against was pip 23 printing "does not
provide the extra" for an extra spelt with an underscore, installing no engine, and carrying on."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.readme_commands import bash_blocks, commands

ROOT = Path(__file__).resolve().parents[2]
# This machine's pip configuration lists local package folders that do not hold every package,
# and pip says so for each: noise of the machine, not of Fleet's install.
_MACHINE_NOISE = re.compile(r"WARNING: Location '[^']+' is ignored: it is neither a file nor a directory\.")


def _venv_env(venv: Path, home: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_REQUIRE"))}
    return {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{env['PATH']}",
            "FLEET_HOME": str(home), "FLEET_PORT": str(port),
            "FLEET_ENDPOINT": f"http://127.0.0.1:{port}", "HF_HUB_OFFLINE": "1"}


def _wait_for_api(process: subprocess.Popen, log: Path, endpoint: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the README's first command ended early:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(f"{endpoint}/status", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"no API after {timeout:.0f}s:\n{log.read_text()[-4000:]}")


def _pip_warnings(output: str) -> list[str]:
    return [line for line in output.splitlines()
            if re.search(r"warning|does not provide", line, re.I) and not _MACHINE_NOISE.search(line)]


@pytest.mark.timeout(1200)
def test_readme_first_command_then_offline_quick_start(tmp_path):
    first_command = bash_blocks("## Set-up in one command")[0]
    assert first_command.startswith("pip install") and first_command.endswith("fleet local")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    port = free_port()
    env = _venv_env(venv, tmp_path / "fleet-home", port)
    endpoint = env["FLEET_ENDPOINT"]
    log = tmp_path / "first-command.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["bash", "-c", first_command], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_api(process, log, endpoint, timeout=900)
        assert _pip_warnings(log.read_text()) == []
        quick_start = [line for line in commands(bash_blocks("## Quick start (works offline)")[0])
                       if not line.startswith("fleet local")]
        script = "set -euo pipefail\n" + "\n".join(quick_start)
        result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert _pip_warnings(result.stdout + result.stderr) == []
        assert "all-MiniLM-L6-v2" in result.stdout  # `fleet list` shows it
        answer = httpx.post(f"{endpoint}/v1/embeddings", timeout=60, json={
            "model": "all-MiniLM-L6-v2", "input": ["Fleet serves models", "on your machines"]})
        assert answer.status_code == 200, answer.text
        assert [len(item["embedding"]) for item in answer.json()["data"]] == [384, 384]
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
