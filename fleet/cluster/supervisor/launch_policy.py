"""Which launches a cluster accepts: the operator's choice, made when the supervisor starts.

A launch body can run code on the cluster's machines: `trust_remote_code` runs the Python of
the model's folder, `envs` sets the replica's environment (LD_PRELOAD, PYTHONPATH...), and a
`model_path` (or a vision projector's path) of the caller's choosing points the engine at any
folder, which with remote code is any code, and otherwise reads files the caller could not. On a
cluster bound to loopback the caller is on the machine already, so every launch keeps that
freedom (the offline quick start loads from any local path). On a cluster reachable from the
network these are refused with 403 unless the supervisor was started allowing them
(`--allow-remote-code`, `--allow-launch-envs`, `--model-root DIR`, `--allow-any-model-path`),
whatever API key the caller holds: a key lets someone use the cluster, not take over its
machines.

The supervisor checks every launch here (REST, clients, CLI, restored launches) and every dry
run (GET /v1/models/estimate), which would otherwise say whether a path exists."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.catalogue.schemas import BaseFamily, ModelSpec
from fleet.cluster.weights.download import path_from_uri
from fleet.cluster.weights.projector import OPTION as PROJECTOR
from fleet.cluster.weights.projector import is_local_path
from fleet.errors import Forbidden
from fleet.paths import within
from fleet.server_config import ServerConfig
from fleet.settings import cache_dir

_CODE = "launch_not_allowed"
_RUN_CODE = "run the Python code that ships with a model"


def truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass(frozen=True)
class LaunchPolicy:
    from_network: bool = False
    listen: str = "127.0.0.1"
    model_roots: tuple[Path, ...] = ()
    allow_remote_code: bool = False
    allow_launch_envs: bool = False
    allow_any_model_path: bool = False
    # The most models a worker holds loaded (fleet.cluster.supervisor.launch_plan); None: any.
    max_loaded_models: int | None = None

    @classmethod
    def from_config(cls, config: ServerConfig | None) -> LaunchPolicy:
        if config is None:
            return cls()
        return cls(from_network=not config.on_loopback, listen=config.host,
                   model_roots=tuple(config.model_roots),
                   allow_remote_code=config.allow_remote_code,
                   allow_launch_envs=config.allow_launch_envs,
                   allow_any_model_path=config.allow_any_model_path,
                   max_loaded_models=config.max_loaded_models)

    def roots(self) -> list[Path]:
        """Where launches may read weights from: the weights cache, always, and --model-root."""
        return [cache_dir(), *self.model_roots]

    def _refuse(self, what: str, doing: str, flag: str) -> Forbidden:
        return Forbidden(f"{what} is not allowed: this cluster is reachable from the network "
                         f"(listening on {self.listen}), where launches may not {doing}; "
                         f"the operator allows it by starting the supervisor with {flag}",
                         code=_CODE)

    def check_request(self, request: dict[str, Any]) -> None:
        """The launch body's own choices, before anything reads the disk: Forbidden (403) for
        each one that this cluster does not allow."""
        if not self.from_network:
            return
        if request.get("envs") and not self.allow_launch_envs:
            raise self._refuse("envs", "set the environment variables of a model's process",
                               "--allow-launch-envs")
        if request.get("model_path"):
            self.check_path(str(request["model_path"]), "model_path")
        projector = request.get(PROJECTOR)
        if isinstance(projector, str) and is_local_path(projector):
            self.check_path(projector, PROJECTOR)

    def check_path(self, value: str, what: str) -> None:
        """`value` (a path or file:// URI) must lead, links and `..` resolved, under a root.
        The message names the path as given, never where it leads or whether it exists."""
        if not self.from_network or self.allow_any_model_path:
            return
        if within(path_from_uri(value), self.roots()):
            return
        roots = ", ".join(str(r) for r in self.roots())
        raise Forbidden(
            f"{what} {value!r} is outside the folders this cluster loads models from ({roots}); "
            f"it is reachable from the network (listening on {self.listen}), so launches read "
            "weights only there. Put the weights under one of them, or have the operator start "
            "the supervisor with --model-root DIR (or --allow-any-model-path)", code=_CODE)

    def check_plan(self, request: dict[str, Any], family: BaseFamily, spec: ModelSpec,
                   builtin: bool, reads_remote_code: bool) -> None:
        """What the chosen family and spec add: the weights of a registered spec's model_uri,
        and remote code that a custom registration asks for (a built-in family's setting is
        the installed catalogue's, hence the operator's)."""
        if not self.from_network:
            return
        if not request.get("model_path") and spec.model_uri:
            self.check_path(spec.model_uri, f"the model_uri of {family.model_name}")
        asked = request.get("trust_remote_code")
        if not reads_remote_code or self.allow_remote_code:
            return  # an engine that runs no repository code (llama.cpp) grants nothing by it
        if truthy(asked):
            raise self._refuse("trust_remote_code", _RUN_CODE, "--allow-remote-code")
        if (not builtin and asked is None
                and truthy(getattr(family, "trust_remote_code", False))):
            raise self._refuse(f"trust_remote_code (asked by the registration of "
                               f"{family.model_name})", _RUN_CODE, "--allow-remote-code")
