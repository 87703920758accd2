"""Xinference's own command line (the `xinference` 4.1.0 package, in a virtual environment of
its own) driving a real `fleet local` unchanged: launch (`-f ggufv2 -q Q4_1 --model-path`),
list, terminate, register, registrations, unregister, engine, cached and remove-cache.

The environment holds `xinference` without its dependencies (they include torch and
torchvision) plus what its command line imports for these verbs, found by running them:
xoscar (its package imports it; xoscar imports pandas), the REST clients (requests, aiohttp) and
its tables and progress bars. It is built once per machine outside the checkout, into a
temporary folder renamed into place when complete, so a half-built one is never used. A
renamed venv's scripts keep the old path in their first line, so the CLI runs as
`python -m xinference.deploy.cmdline`, the module behind the `xinference` script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from tests.builders import _smollm2_gguf
from tests.cache_builders import MINILM, fake_download
from tests.state_db import saved_family
from tests.xinference_files import (
    SMOL_HF,
    SMOL_MS,
    embedding_registration,
    llm_registration,
    rerank_registration,
)

XINFERENCE = "4.1.0"
# Installed without dependencies: xinference's own list pulls torch and much more.
NO_DEPS = [f"xinference=={XINFERENCE}", "xoscar==0.12.2"]
# What its command line imports (xinference declares click<8.2).
CLI_IMPORTS = ["numpy", "pandas", "cloudpickle", "tblib", "psutil", "click<8.2", "tqdm",
               "tabulate", "requests", "aiohttp"]
CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"
GERMANY = [{"role": "user", "content": "What is the capital of Germany?"}]


def _pip(python: Path, *args: str) -> None:
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                           "-c", str(CONSTRAINTS), *args], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"pip install {' '.join(args)} failed:\n{done.stderr[-3000:]}"


def xinference_cli_env() -> Path:
    """The venv's python, built on first use and reused after."""
    cache = Path(os.environ.get("FLEET_TEST_CACHE", Path.home() / ".cache" / "fleet-tests"))
    version = f"py{sys.version_info.major}.{sys.version_info.minor}"
    target = cache / f"xinference-cli-{XINFERENCE}-{version}"
    if (target / "bin" / "python").exists():
        return target / "bin" / "python"
    partial = cache / f".partial-xinference-cli-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(partial)
    python = partial / "bin" / "python"
    _pip(python, "--no-deps", *NO_DEPS)
    _pip(python, *CLI_IMPORTS)
    try:
        partial.rename(target)  # atomic: a half-built environment is never taken for one
    except OSError:  # another session finished first: use its environment
        shutil.rmtree(partial, ignore_errors=True)
    return target / "bin" / "python"


@pytest.fixture(scope="session")
def xinference_python() -> Path:
    return xinference_cli_env()


@pytest.fixture(scope="module")
def xinference(xinference_python: Path, local_cluster, tmp_path_factory):
    """Runs `xinference VERB -e ENDPOINT ARGS...`; its own home is a temporary folder."""
    home = tmp_path_factory.mktemp("xinference-home")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["XINFERENCE_HOME"] = str(home)

    def run(verb: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(xinference_python), "-m", "xinference.deploy.cmdline", verb,
             "-e", local_cluster.endpoint, *args],
            capture_output=True, text=True, input=stdin, env=env, timeout=300)

    return run


@pytest.fixture(scope="module")
def http(local_cluster) -> httpx.Client:
    return httpx.Client(base_url=local_cluster.endpoint, timeout=120)


def _ok(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout + done.stderr


def _rows(output: str, first: str) -> list[list[str]]:
    """The table rows (split on whitespace) whose first cell is `first`."""
    return [line.split() for line in output.splitlines() if line.split()[:1] == [first]]


def test_the_environment_is_small_and_its_cli_answers(xinference_python):
    # Without PYTHONPATH, as the CLI runs: a checkout on it would list as installed here.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    listed = subprocess.run([str(xinference_python), "-m", "pip", "list", "--format=json"],
                            capture_output=True, text=True, check=True, env=env)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "xinference" in installed and not installed & {"torch", "torchvision", "fleet-serve"}
    shown = subprocess.run([str(xinference_python), "-m", "xinference.deploy.cmdline", "--help"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "remove-cache" in shown.stdout


def test_launch_ggufv2_list_chat_terminate(xinference, http, minilm_path):
    gguf = _smollm2_gguf()
    launched = _ok(xinference("launch", "-n", "smollm2-instruct", "-t", "LLM", "-en", "llama.cpp",
                              "-f", "ggufv2", "-q", "Q4_1", "--model-path", str(gguf),
                              "-u", "xcli-smol"))
    assert "Model uid: xcli-smol" in launched
    _ok(xinference("launch", "-n", MINILM, "-t", "embedding", "--model-path", minilm_path,
                   "-u", "xcli-minilm"))
    [instance] = http.get("/v1/models/instances", params={"model_uid": "xcli-smol"}).json()
    assert instance["status"] == "READY" and instance["replica_statuses"][0]["status"] == "READY"

    listed = _ok(xinference("list"))
    assert _rows(listed, "xcli-smol") == [
        ["xcli-smol", "LLM", "smollm2-instruct", "gguf", "0_135", "Q4_1"]]
    assert _rows(listed, "xcli-minilm") == [["xcli-minilm", "embedding", MINILM, "384"]]

    reply = http.post("/v1/chat/completions", json={"model": "xcli-smol", "messages": GERMANY,
                                                    "max_tokens": 16, "temperature": 0})
    assert "Berlin" in reply.json()["choices"][0]["message"]["content"]

    for uid in ("xcli-smol", "xcli-minilm"):
        _ok(xinference("terminate", "--model-uid", uid))
    assert http.get("/v1/models").json()["data"] == []
    assert http.get("/v1/models/instances", params={"model_uid": "xcli-smol"}).json() == []
    assert "xcli" not in _ok(xinference("list"))


def test_a_failed_launch_says_why(xinference, http, tmp_path):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"this is not a gguf file" * 1000)
    failed = xinference("launch", "-n", "smollm2-instruct", "-en", "llama.cpp", "-f", "ggufv2",
                        "-q", "Q4_1", "--model-path", str(broken), "-u", "xcli-broken")
    assert failed.returncode != 0
    assert "Failed to launch model xcli-broken" in failed.stderr
    assert "invalid magic" in failed.stderr  # llama.cpp's own words, through replica_statuses
    [instance] = http.get("/v1/models/instances", params={"model_name": "smollm2-instruct"}).json()
    assert instance["status"] == "ERROR"
    _ok(xinference("terminate", "--model-uid", "xcli-broken"))


def test_options_fleet_lacks_are_refused_with_the_reason(xinference, http):
    gguf = str(_smollm2_gguf())
    for option, reason in ((["--lora-modules", "adapter", gguf], "LoRA adapters"),
                           (["--n-worker", "2"], "a replica runs on one worker")):
        refused = xinference("launch", "-n", "smollm2-instruct", "-en", "llama.cpp",
                             "--model-path", gguf, *option)
        assert refused.returncode != 0 and reason in refused.stderr
    assert http.get("/v1/models").json()["data"] == []


def test_engine_filters_on_ggufv2(xinference):
    gguf = _rows(_ok(xinference("engine", "-n", "smollm2-instruct", "-f", "ggufv2", "-q", "Q4_1")),
                 "smollm2-instruct")
    assert gguf == [["smollm2-instruct", "llama.cpp", "ggufv2", "0_135", "Q4_1"]]
    pytorch = _rows(_ok(xinference("engine", "-n", "smollm2-instruct", "-en", "Transformers")),
                    "smollm2-instruct")
    assert pytorch and {row[1:3] == ["transformers", "pytorch"] for row in pytorch} == {True}


def test_register_registrations_launch_unregister(xinference, http, local_cluster, tmp_path,
                                                  minilm_path):
    gguf = _smollm2_gguf()
    files = {"LLM": llm_registration("xcli-smol-file", gguf.parent),
             "embedding": embedding_registration("xcli-minilm-file", Path(minilm_path)),
             "rerank": rerank_registration("xcli-rerank-file", tmp_path)}
    for model_type, data in files.items():
        path = tmp_path / f"{model_type}.json"
        path.write_text(json.dumps(data))
        _ok(xinference("register", "-t", model_type, "-f", str(path), "--persist"))
    llm_rows = [r for r in _rows(_ok(xinference("registrations", "-t", "LLM")), "LLM")
                if r[1] == "xcli-smol-file"]
    assert llm_rows == [["LLM", "xcli-smol-file", "['en']", "['chat']", "False"]]
    embedding_rows = [r for r in _rows(_ok(xinference("registrations", "-t", "embedding")),
                                       "embedding") if r[1] == "xcli-minilm-file"]
    assert embedding_rows == [["embedding", "xcli-minilm-file", "['en']", "384", "False"]]
    rerank_rows = [r for r in _rows(_ok(xinference("registrations", "-t", "rerank")), "rerank")
                   if r[1] == "xcli-rerank-file"]
    assert rerank_rows == [["rerank", "xcli-rerank-file", "['en',", "'zh']", "False"]]

    [spec] = http.get("/v1/model_registrations/LLM/xcli-smol-file").json()["model_specs"]
    assert (spec["model_id"], spec["modelscope_model_id"]) == (SMOL_HF, SMOL_MS)
    assert spec["quantizations"] == ["Q4_1", "Q8_0"]
    assert saved_family(local_cluster.home, "LLM", "xcli-smol-file") is not None

    _ok(xinference("launch", "-n", "xcli-smol-file", "-en", "llama.cpp", "-f", "ggufv2",
                   "-q", "Q4_1"))
    reply = http.post("/v1/chat/completions", json={"model": "xcli-smol-file",
                                                    "messages": GERMANY, "max_tokens": 16,
                                                    "temperature": 0})
    assert "Berlin" in reply.json()["choices"][0]["message"]["content"]
    refused = xinference("unregister", "-t", "LLM", "-n", "xcli-smol-file")
    assert refused.returncode != 0 and "terminate it first" in refused.stderr
    _ok(xinference("terminate", "--model-uid", "xcli-smol-file"))

    for model_type, data in files.items():
        _ok(xinference("unregister", "-t", model_type, "-n", data["model_name"]))
        assert data["model_name"] not in _ok(xinference("registrations", "-t", model_type))
    assert saved_family(local_cluster.home, "LLM", "xcli-smol-file") is None


def test_cached_and_remove_cache(xinference, local_cluster, minilm_path):
    entry = fake_download(local_cluster.home, minilm_path)
    cached = _ok(xinference("cached"))
    assert entry.name in cached and MINILM in cached
    assert entry.name in _ok(xinference("cached", "-n", MINILM))

    kept = xinference("remove-cache", "-n", entry.name, stdin="n\n")
    assert kept.returncode != 0 and str(entry) in kept.stdout  # listed, then not confirmed
    assert entry.is_dir()
    removed = _ok(xinference("remove-cache", "-n", entry.name, stdin="y\n"))
    assert f"Cache directory {entry.name} has been deleted." in removed
    assert not entry.exists()
    assert "There are no cache files." in _ok(xinference("cached"))
    absent = _ok(xinference("remove-cache", "-n", entry.name))
    assert f"There is no model version named {entry.name}." in absent
