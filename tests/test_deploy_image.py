"""The Dockerfile, .dockerignore and deploy/compose.yaml, read without a container engine: the
image runs as a user, bakes no secret, checks /status, and orders its layers so that a code
change rebuilds only the last; compose builds the image's runtime stage, its pieces agree on
ports and names, and the commands its containers run are accepted by Fleet's own CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from fleet.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|DATABASE_URL|CERT", re.IGNORECASE)


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.read_text().splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        lines.append(current.strip())
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages(steps: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    name = ""
    for instruction, args in steps:
        if instruction == "FROM":
            name = args.split()[-1]
            found[name] = []
        elif name:
            found[name].append((instruction, args))
    return found


@pytest.fixture(scope="module")
def dockerfile() -> dict[str, list[tuple[str, str]]]:
    return stages(instructions(ROOT / "Dockerfile"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def runtime_env(steps: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for instruction, args in steps:
        if instruction == "ENV":
            env |= dict(re.findall(r"(\w+)=(\S+)", args))
    return env


def test_the_stages_put_the_dependencies_before_the_code(dockerfile):
    assert list(dockerfile) == ["base", "deps", "wheel", "runtime"]
    copied = {name: [a for i, a in steps if i == "COPY"] for name, steps in dockerfile.items()}
    # The dependencies come from pyproject.toml alone: no code, so a code change keeps them.
    assert copied["deps"] == ["pyproject.toml deploy/docker/requirements.py /build/"]
    assert not any("fleet" in a.split()[0] for a in copied["deps"])
    runtime = dockerfile["runtime"]
    assert runtime[0] == ("COPY", "--from=deps /opt/fleet /opt/fleet")
    # The code's layer is the runtime's only RUN, after the dependencies' COPY.
    [install] = [a for i, a in runtime if i == "RUN"]
    assert "from=wheel" in install and "--no-deps" in install
    assert [i for i, _ in runtime].index("RUN") > [i for i, _ in runtime].index("COPY")


def test_the_image_runs_as_a_user_with_its_state_on_a_volume(dockerfile):
    runtime = dockerfile["runtime"]
    [user] = [a for i, a in runtime if i == "USER"]
    assert user not in ("root", "0") and not user.startswith("0:")
    env = runtime_env(runtime)
    [volume] = [json.loads(a) for i, a in runtime if i == "VOLUME"]
    assert volume == [env["FLEET_HOME"]]
    [exposed] = [a.split() for i, a in runtime if i == "EXPOSE"]
    assert env["FLEET_PORT"] in exposed and "9998" in exposed
    [entrypoint] = [json.loads(a) for i, a in runtime if i == "ENTRYPOINT"]
    assert entrypoint == ["fleet"]
    [healthcheck] = [a for i, a in runtime if i == "HEALTHCHECK"]
    assert "/status" in healthcheck and "FLEET_PORT" in healthcheck
    # By default it serves on every interface, where the CLI refuses to start without keys.
    [command] = [json.loads(a) for i, a in runtime if i == "CMD"]
    assert command == ["local", "-H", "0.0.0.0"]


def test_no_secret_is_baked_into_the_image(dockerfile):
    for name, steps in dockerfile.items():
        for instruction, args in steps:
            if instruction in ("ENV", "ARG"):
                for variable, _ in re.findall(r"(\w+)=(\S*)", args) or [(args, "")]:
                    assert not SECRET_NAME.search(variable), (name, instruction, args)
            if instruction in ("COPY", "ADD"):
                assert not re.search(r"\.pem|\.crt|ca-cert|secret|\.env|key", args, re.I), args
    # The build's certificate authorities arrive as a build secret, mounted for one step only.
    [deps_run] = [a for i, a in dockerfile["deps"] if i == "RUN"]
    assert deps_run.startswith("--mount=type=secret,id=ca_bundle")


def test_the_build_context_holds_only_what_the_image_copies(dockerfile):
    rules = [r for r in (ROOT / ".dockerignore").read_text().splitlines()
             if r.strip() and not r.startswith("#")]
    assert rules[0] == "*"  # an allow list
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for steps in dockerfile.values():
        for instruction, args in steps:
            if instruction == "COPY" and not args.startswith("--from"):
                for source in args.split()[:-1]:
                    assert any(source == a or source.startswith(a + "/") for a in allowed), source


def _requirements(extras: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(DEPLOY / "docker" / "requirements.py"),
                           str(ROOT / "pyproject.toml"), extras],
                          capture_output=True, text=True, timeout=30)


def test_the_dependency_layer_installs_the_engines_asked_for():
    gguf_only = _requirements("llama_cpp").stdout.split()
    assert "xllamacpp>=2026.4" in gguf_only and "fastapi>=0.110" in gguf_only
    assert not [r for r in gguf_only if r.startswith("torch")]  # the image without PyTorch
    everything = _requirements("all").stdout.split()
    assert {"torch>=2.2,<3", "sentence-transformers>=3.0", "psycopg[binary]>=3.1"} <= set(everything)
    assert not [r for r in everything if r.startswith("fleet-serve")]
    misspelt = _requirements("transformer")
    assert misspelt.returncode != 0 and "no extra 'transformer'" in misspelt.stderr


def test_compose_builds_the_runtime_stage_and_its_pieces_agree(compose, dockerfile):
    services = compose["services"]
    for name in ("supervisor", "worker"):
        build = services[name]["build"]
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
        assert build["target"] in dockerfile
        assert build["target"] == list(dockerfile)[-1]
    supervisor, worker = services["supervisor"], services["worker"]
    api_port = runtime_env(dockerfile["runtime"])["FLEET_PORT"]
    assert supervisor["ports"][0].rsplit(":", 1)[1] == api_port
    assert worker["command"][worker["command"].index("-e") + 1] == f"http://supervisor:{api_port}"
    assert supervisor["environment"]["FLEET_ACTOR_PORT"] == worker["environment"]["FLEET_ACTOR_PORT"]
    assert "supervisor" in supervisor["environment"]["FLEET_ALLOWED_HOSTS"].split()
    # Scalable: no fixed name, no published port.
    assert "container_name" not in worker and "ports" not in worker
    assert str(worker["environment"]["FLEET_ACTOR_PORT"]) in worker["healthcheck"]["test"][-1]
    # Keys and the secret come from the caller's environment, required, never written here.
    for service in (supervisor, worker):
        for variable, value in service["environment"].items():
            if SECRET_NAME.search(variable):
                assert value.startswith(f"${{{variable}:?") and value.endswith("}"), variable
    scrape = yaml.safe_load((DEPLOY / "compose" / "prometheus" / "prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"supervisor:{api_port}"]
    assert "--metrics-public" in supervisor["command"]


def test_grafana_is_provisioned_with_fleets_dashboard(compose):
    grafana = compose["services"]["grafana"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in grafana["volumes"]
                  if v.startswith("."))
    provider = yaml.safe_load((DEPLOY / "compose" / "grafana" / "dashboards" /
                               "fleet.yaml").read_text())["providers"][0]
    [(source, _)] = [(s, t) for s, t in mounts.items()
                     if t.startswith(provider["options"]["path"] + "/")]
    dashboard = json.loads((DEPLOY / source).read_text())
    assert dashboard["uid"] and dashboard["panels"]
    [datasource] = yaml.safe_load((DEPLOY / "compose" / "grafana" / "datasources" /
                                   "prometheus.yaml").read_text())["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"] == "http://prometheus:9090"
    for source in mounts:
        assert (DEPLOY / source).exists(), source


@pytest.mark.parametrize("service", ["supervisor", "worker"])
def test_the_compose_commands_are_accepted_by_fleets_command_line(compose, service,
                                                                 monkeypatch, tmp_path):
    spec = compose["services"][service]
    for variable, value in spec["environment"].items():
        if not value.startswith("${"):
            monkeypatch.setenv(variable, value)
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    command = cli.commands[spec["command"][0]]
    assert isinstance(command, click.Command)
    args = [str(tmp_path) if a == "/models" else a for a in spec["command"][1:]]
    params = command.make_context(spec["command"][0], args).params
    assert params["actor_port"] == int(spec["environment"]["FLEET_ACTOR_PORT"])
