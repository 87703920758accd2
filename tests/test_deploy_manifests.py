"""The Kubernetes manifests (deploy/kubernetes): every overlay renders with `kubectl kustomize`,
every object validates against the Kubernetes API's schemas (kubernetes-validate, whose schemas
ship in the package: no network), and what the pieces tell each other agrees: the ports the
containers are told to use are the ones the Services and NetworkPolicies open, the probes ask
/status, no secret value is in the render, the GPU overlay asks for GPUs, and the commands the
containers run are accepted by Fleet's own command line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml

from fleet.api.metrics import FleetMetrics
from fleet.cli.main import cli
from fleet.port_range import parse_port_range
from tests.kustomize import KUBERNETES, render

OVERLAYS = ("cpu", "gpu", "keda")
# The oldest Kubernetes the manifests are held to (StatefulSet's PVC retention policy is GA
# there), and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.32.0", kubernetes_validate.latest_version())
# Kinds that come with an operator's CRDs, whose schemas the validator does not have: checked
# field by field below.
CUSTOM_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "ScaledObject": "keda.sh/v1alpha1"}


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(KUBERNETES / "overlays" / name) for name in OVERLAYS} | {
        "base": render(KUBERNETES / "base")}


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def container(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    [found] = one(objects, kind, name)["spec"]["template"]["spec"]["containers"]
    return found


def env_value(spec: dict[str, Any], name: str) -> str:
    [value] = [e["value"] for e in spec["env"] if e["name"] == name]
    return value


def option(args: list[str], *names: str) -> str:
    for index, arg in enumerate(args):
        if arg in names:
            return args[index + 1]
    raise AssertionError(f"{names} not in {args}")


def policy_ports(objects: list[dict[str, Any]], name: str, from_fleet: bool) -> set[int]:
    """The ports a NetworkPolicy opens, to Fleet's own pods (from_fleet) or to anyone."""
    ports: set[int] = set()
    for rule in one(objects, "NetworkPolicy", name)["spec"]["ingress"]:
        if ("from" in rule) != from_fleet:
            continue
        if from_fleet:
            assert rule["from"] == [{"podSelector": {"matchLabels": {
                "app.kubernetes.io/name": "fleet"}}}]
        for port in rule["ports"]:
            ports |= set(range(port["port"], port.get("endPort", port["port"]) + 1))
    return ports


@pytest.mark.parametrize("overlay", [*OVERLAYS, "base"])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(rendered, overlay, version):
    kinds = set()
    for obj in rendered[overlay]:
        kinds.add(obj["kind"])
        if obj["kind"] in CUSTOM_KINDS:
            assert obj["apiVersion"] == CUSTOM_KINDS[obj["kind"]]
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):
                kubernetes_validate.validate(obj, version, strict=True)
            continue
        # strict: a misspelt field is an error, not ignored.
        kubernetes_validate.validate(obj, version, strict=True)
    assert {"Deployment", "StatefulSet", "Service", "PersistentVolumeClaim",
            "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    assert ({"ServiceMonitor", "ScaledObject"} <= kinds) == (overlay == "keda")


def test_a_misspelt_field_fails_the_validation(rendered):
    """The validation above can fail: strict mode refuses a field Kubernetes does not know."""
    deployment = one(rendered["cpu"], "Deployment", "fleet-supervisor")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_value_is_in_the_render(rendered, overlay):
    objects = rendered[overlay]
    assert not [o for o in objects if o["kind"] in ("Secret", "ConfigMap")]
    for kind, name in (("Deployment", "fleet-supervisor"), ("StatefulSet", "fleet-worker")):
        for variable in container(objects, kind, name)["env"]:
            if re.search("SECRET|KEY|PASSWORD|DATABASE_URL|AUTH", variable["name"]):
                assert "value" not in variable, variable
                assert variable["valueFrom"]["secretKeyRef"]["name"] == "fleet", variable
    text = yaml.safe_dump_all(objects)
    assert "sk-" not in text and "BEGIN" not in text


def test_the_supervisor_is_probed_on_status_and_keeps_its_state(rendered):
    objects = rendered["cpu"]
    supervisor = container(objects, "Deployment", "fleet-supervisor")
    api_port = int(option(supervisor["args"], "-p", "--port"))
    [api] = [p for p in supervisor["ports"] if p["name"] == "api"]
    assert api["containerPort"] == api_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert supervisor[probe]["httpGet"] == {"path": "/status", "port": "api"}
    deployment = one(objects, "Deployment", "fleet-supervisor")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two on one state
    home = env_value(supervisor, "FLEET_HOME")
    [mount] = [m for m in supervisor["volumeMounts"] if m["mountPath"] == home]
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"]
                if v["name"] == mount["name"]]
    one(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


def test_the_ports_opened_are_the_ports_the_containers_are_told_to_use(rendered):
    objects = rendered["cpu"]
    supervisor = container(objects, "Deployment", "fleet-supervisor")
    worker = container(objects, "StatefulSet", "fleet-worker")
    api_port = int(option(supervisor["args"], "-p", "--port"))
    supervisor_actors = int(env_value(supervisor, "FLEET_ACTOR_PORT"))
    worker_actors = int(env_value(worker, "FLEET_ACTOR_PORT"))
    first, last = parse_port_range(env_value(worker, "FLEET_REPLICA_PORTS"))

    assert policy_ports(objects, "fleet-supervisor", from_fleet=False) == {api_port}
    assert policy_ports(objects, "fleet-supervisor", from_fleet=True) == {supervisor_actors}
    assert policy_ports(objects, "fleet-worker", from_fleet=False) == set()
    assert policy_ports(objects, "fleet-worker", from_fleet=True) == {
        worker_actors, *range(first, last + 1)}
    # The policies select the pods they are about.
    for name, component in (("fleet-supervisor", "supervisor"), ("fleet-worker", "worker")):
        selector = one(objects, "NetworkPolicy", name)["spec"]["podSelector"]["matchLabels"]
        assert selector == {"app.kubernetes.io/name": "fleet",
                            "app.kubernetes.io/component": component}
    # Workers reach the API and the actors through the supervisor's Service.
    service = one(objects, "Service", "fleet-supervisor")
    assert {p["port"] for p in service["spec"]["ports"]} == {api_port, supervisor_actors}
    assert option(worker["args"], "-e", "--endpoint") == f"http://fleet-supervisor:{api_port}"
    assert "fleet-supervisor" in env_value(supervisor, "FLEET_ALLOWED_HOSTS").split()


@pytest.mark.parametrize("kind, name", [("Deployment", "fleet-supervisor"),
                                        ("StatefulSet", "fleet-worker")])
def test_the_containers_commands_are_accepted_by_fleets_command_line(rendered, kind, name,
                                                                    monkeypatch, tmp_path):
    """Each container's arguments and plain environment, parsed by the real `fleet` command:
    a misspelt option or a bad port range would stop the pod at its start."""
    spec = container(rendered["cpu"], kind, name)
    for variable in spec["env"]:
        if "value" in variable:
            monkeypatch.setenv(variable["name"], variable["value"])
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    command = cli.commands[spec["args"][0]]
    assert isinstance(command, click.Command)
    context = command.make_context(spec["args"][0], list(spec["args"][1:]))
    params = context.params
    assert params["actor_port"] == int(env_value(spec, "FLEET_ACTOR_PORT"))
    if name == "fleet-worker":
        assert params["replica_ports"] == env_value(spec, "FLEET_REPLICA_PORTS")
    else:
        assert params["host"] == "0.0.0.0" and params["metrics_public"]


def test_the_gpu_overlay_asks_for_a_gpu_where_there_is_one(rendered):
    objects = rendered["gpu"]
    worker_set = one(objects, "StatefulSet", "fleet-worker")
    pod = worker_set["spec"]["template"]["spec"]
    worker = container(objects, "StatefulSet", "fleet-worker")
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        pod["tolerations"]
    assert worker["image"] == "fleet:cuda"
    assert container(rendered["cpu"], "StatefulSet", "fleet-worker")["image"] == "fleet:cpu"
    assert "nvidia.com/gpu" not in container(rendered["cpu"], "StatefulSet",
                                             "fleet-worker")["resources"]["limits"]
    [shm] = [v for v in pod["volumes"] if v["name"] == "shm"]
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}


def _fleet_metric_names() -> set[str]:
    names = set()
    for collector in FleetMetrics().registry._collector_to_names:  # the registry's own table
        names |= {metric.name for metric in collector.describe()}
    return names


def test_keda_scales_the_workers_on_fleets_own_gauges(rendered):
    objects = rendered["keda"]
    scaled = one(objects, "ScaledObject", "fleet-worker")["spec"]
    target = scaled["scaleTargetRef"]
    assert one(objects, target["kind"], target["name"])["apiVersion"] == target["apiVersion"]
    assert scaled["minReplicaCount"] >= 1  # the supervisor needs a worker to place anything
    assert scaled["cooldownPeriod"] > 60  # longer than a model's default scale_down_delay
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    used = set(re.findall(r"\bfleet_[a-z_]+", query))
    assert used == {"fleet_replica_ready", "fleet_model_replicas_waiting_for_capacity"}
    assert used <= _fleet_metric_names()
    # Prometheus scrapes the supervisor's Service, on its API port, where /metrics is.
    monitor = one(objects, "ServiceMonitor", "fleet")["spec"]
    service = one(objects, "Service", "fleet-supervisor")
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == ["api"]
    assert monitor["endpoints"][0]["path"] == "/metrics"


def test_the_auth_config_component_mounts_the_file_it_names(tmp_path):
    """Users and keys from a file: the Secret's file mounted where FLEET_AUTH_CONFIG points."""
    overlay = tmp_path / "with-auth"
    overlay.mkdir()
    relative = Path("..") / Path(*([".."] * len(overlay.parts[1:])))
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": [str(relative / KUBERNETES.relative_to("/") / "overlays" / "cpu")],
        "components": [str(relative / KUBERNETES.relative_to("/") / "components" / "auth-config")],
    }))
    objects = render(overlay)
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[0], strict=True)
    supervisor = container(objects, "Deployment", "fleet-supervisor")
    path = Path(env_value(supervisor, "FLEET_AUTH_CONFIG"))
    [mount] = [m for m in supervisor["volumeMounts"] if m["mountPath"] == str(path.parent)]
    pod = one(objects, "Deployment", "fleet-supervisor")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "fleet-auth-config"
    assert mount["readOnly"] is True


def test_the_docs_make_the_secret_the_manifests_read(rendered):
    """docs/deploy.md's `kubectl create secret` gives every key the pods require."""
    docs = (KUBERNETES.parent.parent / "docs" / "deploy.md").read_text()
    [command] = re.findall(r"create secret generic fleet \\\n(.*?)\n\n", docs, re.S)
    given = set(re.findall(r"--from-literal=([a-z-]+)=", command))
    required = set()
    for kind, name in (("Deployment", "fleet-supervisor"), ("StatefulSet", "fleet-worker")):
        for variable in container(rendered["cpu"], kind, name)["env"]:
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                required.add(ref["key"])
    assert required == given == {"cluster-secret", "api-keys"}


@pytest.mark.parametrize("kind, name", [("Deployment", "fleet-supervisor"),
                                        ("StatefulSet", "fleet-worker")])
def test_on_a_read_only_root_what_fleet_writes_goes_to_volumes(rendered, kind, name):
    """xoscar makes its unix sockets under $XOSCAR_DIR/.xoscar (else ~/.xoscar), and libraries
    cache under $XDG_CACHE_HOME: on a read-only root both must point into a mounted volume
    (seen: a supervisor pod with neither set died at start, 'Read-only file system')."""
    spec = container(rendered["cpu"], kind, name)
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    mounted = [m["mountPath"] for m in spec["volumeMounts"] if not m.get("readOnly")]
    for variable in ("XOSCAR_DIR", "XDG_CACHE_HOME", "FLEET_HOME"):
        path = env_value(spec, variable)
        assert any(path == m or path.startswith(m + "/") for m in mounted), variable
