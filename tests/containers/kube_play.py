"""The Kustomize base (deploy/kubernetes/base) as `podman kube play` can run it.

Podman plays Pods, Deployments, PersistentVolumeClaims, ConfigMaps and Secrets, and skips every
other kind; it has no Services, no cluster DNS and no StatefulSet controller. `for_podman`
changes only what it must for that, each change with its reason; everything else is played as
rendered: the supervisor's Deployment and its volume claim, the commands, ports, environment,
the Secret's keys read by `secretKeyRef`, the security context (uid 1000, a read-only root
filesystem, no capabilities) and the volumes. The Services, the PodDisruptionBudget and the
NetworkPolicies stay in the file and are skipped by podman itself."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

Manifest = dict[str, Any]
MODELS = "/models"


def _pod_spec(manifest: Manifest) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def _as_deployment(statefulset: Manifest) -> tuple[Manifest, list[Manifest]]:
    """A StatefulSet of one as a Deployment of one, with the claim its volume template would
    have made for pod 0 (`<template>-<set>-0`, the StatefulSet controller's naming).

    Podman has no StatefulSet (it skips the kind: the worker would never start). What the set
    adds over a Deployment, a stable name and a volume per pod, has nothing to do with one pod
    on one host."""
    name = statefulset["metadata"]["name"]
    spec = statefulset["spec"]
    template = copy.deepcopy(spec["template"])
    claims = []
    for claim_template in spec.get("volumeClaimTemplates", []):
        volume = claim_template["metadata"]["name"]
        claim_name = f"{volume}-{name}-0"
        claims.append({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {**claim_template["metadata"], "name": claim_name},
                       "spec": claim_template["spec"]})
        template["spec"]["volumes"].append(
            {"name": volume, "persistentVolumeClaim": {"claimName": claim_name}})
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": statefulset["metadata"],
                  "spec": {"replicas": spec.get("replicas", 1), "selector": spec["selector"],
                           "template": template}}
    return deployment, claims


def _mount_models(pod: dict[str, Any], models: Path) -> None:
    """The model folder, read-only, at /models. In a cluster the weights come from the hub into
    each worker's cache; the hub cannot be reached here, so a launch names a local file."""
    pod["volumes"].append({"name": "models", "hostPath": {"path": str(models), "type": "Directory"}})
    for container in pod["containers"]:
        container["volumeMounts"].append({"name": "models", "mountPath": MODELS, "readOnly": True})


def _without_probes(pod: dict[str, Any]) -> None:
    """Podman 4.3 turns a liveness probe into a healthcheck that runs `curl` (httpGet) or `nc`
    (tcpSocket), neither of which is in the image, on port 0 (it reads a named port as a
    number), and restarts the container when it fails, wherever systemd runs the healthcheck
    timers: it would restart healthy pods. Readiness and startup probes it ignores. The image's
    own HEALTHCHECK (Python asking /status) stays."""
    for container in pod["containers"]:
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            container.pop(probe, None)


def _unpublished(pod: dict[str, Any]) -> None:
    """Podman 4.3 publishes every `containerPort` on the host's port of the same number, where
    Kubernetes publishes none: the worker's 9998 would collide with the supervisor's, and the
    host's 9997 may be taken. The pods are reached at their own addresses, as in a cluster."""
    for container in pod["containers"]:
        container.pop("ports", None)


def for_podman(objects: list[Manifest], image: str, models: Path,
               supervisor_ip: str) -> list[Manifest]:
    """The rendered base, changed only where podman cannot play it as it is."""
    played: list[Manifest] = []
    for manifest in copy.deepcopy(objects):
        if manifest["kind"] == "StatefulSet":
            manifest, claims = _as_deployment(manifest)
            played.extend(claims)
        played.append(manifest)
    for manifest in played:
        if manifest["kind"] != "Deployment":
            continue
        pod = _pod_spec(manifest)
        for container in pod["containers"]:
            # The image built for the tests (without PyTorch), not a registry's fleet:cpu.
            container["image"] = image
        _mount_models(pod, models)
        _without_probes(pod)
        _unpublished(pod)
        if manifest["metadata"]["name"] == "fleet-supervisor":
            # Launches may read weights only from the cache and the roots it is given.
            pod["containers"][0]["env"].append({"name": "FLEET_MODEL_ROOTS", "value": MODELS})
        else:
            # Podman has no Services and no cluster DNS: the Service's name the worker is told
            # (`-e http://fleet-supervisor:9997`) is given to its pod as a host alias of the
            # supervisor pod's fixed address.
            pod["hostAliases"] = [{"ip": supervisor_ip, "hostnames": ["fleet-supervisor"]}]
    # Deployments last, supervisor first: `--ip` gives the pods their addresses in this order.
    played.sort(key=lambda m: (m["kind"] == "Deployment", m["metadata"]["name"] != "fleet-supervisor"))
    return played


def secret_json(values: dict[str, str]) -> str:
    """The Secret `fleet`, which the docs make with `kubectl create secret`, in the form podman's
    secret store gives `secretKeyRef`: a JSON object of base64 values (podman 4.3 reads it so,
    and stores a Secret played from YAML in a form it then cannot read)."""
    return json.dumps({key: base64.b64encode(value.encode()).decode()
                       for key, value in values.items()})
