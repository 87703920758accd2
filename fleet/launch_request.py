"""A launch request (Xinference's launch body), checked the same way wherever it comes from:
`POST /v1/models` and its dry run, and the launch requests the supervisor reads back (the state
file of the last run, and what a worker reports of the replicas it still runs), so that nothing
gets in by the back door that a launch would refuse.

It lives outside fleet.api because the cluster reads it too (arrows point api -> cluster)."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from fleet.autoscale import MAX_DELAY_S, check_autoscale
from fleet.catalogue.schemas import MODEL_TYPES, normalize_model_type
from fleet.catalogue.xinference_format import canonical_format
from fleet.errors import BadRequest, validation_message
from fleet.keep_alive import parse_keep_alive
from fleet.limits import MAX_REPLICAS, check_depth
from fleet.model_aliases import MAX_ALIASES, AliasName, check_alias_names

# Xinference launch options that Fleet has no counterpart for: refused when set, so that nothing
# a user asked for is silently dropped. Their defaults (null, false), which Xinference's clients
# always send, pass.
_UNSUPPORTED_LAUNCH_OPTIONS = {
    "peft_model_config": "LoRA adapters (peft_model_config, xinference launch --lora-modules)",
    "replica_config": "per-replica placement (replica_config); place replicas with worker_ip "
                      "and gpu_idx",
    "quantization_config": "quantizing weights at load (quantization_config); launch a "
                           "quantized variant (-f gguf -q ...) instead",
    "enable_virtual_env": "a virtual environment per model (enable_virtual_env)",
    "virtual_env_packages": "a virtual environment per model (virtual_env_packages)",
    "virtual_env_find_links": "a virtual environment per model (virtual_env_find_links)",
}


# The replica's key to the cluster's actor pools and the cluster's secret: set by Fleet.
RESERVED_ENVS = frozenset({"XOSCAR_AUTH_KEY", "FLEET_CLUSTER_SECRET"})


class LaunchRequest(BaseModel):
    """Xinference's launch body; unknown keys are engine arguments and pass through."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_name: str = Field(min_length=1)
    model_type: str | None = Field(default=None, description="In any case (llm is LLM)",
                                   json_schema_extra={"enum": [*MODEL_TYPES, None]})
    model_engine: str | None = None
    model_uid: str | None = Field(default=None, min_length=1, max_length=200)
    model_size_in_billions: int | float | str | None = None
    model_format: str | None = None
    quantization: str | None = None
    replica: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    n_gpu: int | str | None = "auto"
    gpu_idx: int | list[int] | None = None
    worker_ip: str | None = None
    model_path: str | None = None
    request_limits: int | None = Field(default=None, ge=1)
    envs: dict[str, str] | None = None
    # How long the model stays loaded without a request, as Ollama spells it (fleet.keep_alive);
    # none: the cluster's default (itself never, unless `--keep-alive` says otherwise).
    keep_alive: str | int | float | None = Field(
        default=None, description="Unload the model after this long without a request (30s, "
                                  "10m, 1h; seconds; -1 never); its next request loads it")
    idle: bool | None = Field(default=None, description="Launch it unloaded: listed, loaded by "
                                                        "its first request")
    # Autoscaling (fleet.autoscale): on when either bound is named.
    min_replicas: StrictInt | None = Field(default=None, ge=0, le=MAX_REPLICAS, description=(
        "Autoscaling's floor; 0: unloaded when idle, loaded by the next request"))
    max_replicas: StrictInt | None = Field(default=None, ge=1, le=MAX_REPLICAS,
                                           description="Autoscaling's ceiling")
    target_inflight: float | None = Field(default=None, gt=0, le=1_000_000, description=(
        "Requests running plus queued per replica above which one is added (default per "
        "model type)"))
    scale_up_delay: float | None = Field(default=None, ge=0, le=MAX_DELAY_S, description=(
        "Seconds the load must stay above the target before a replica is added (default 5)"))
    scale_down_delay: float | None = Field(default=None, ge=0, le=MAX_DELAY_S, description=(
        "Seconds the load must fit in one replica fewer before one is removed (default 60)"))

    aliases: list[AliasName] | None = Field(default=None, max_length=MAX_ALIASES, description=(
        "Other names the model answers to (fleet.model_aliases); changeable while it serves"))

    @field_validator("aliases")
    @classmethod
    def _alias_names(cls, value: list[str] | None) -> list[str] | None:
        return check_alias_names(value) if value is not None else None

    @field_validator("keep_alive")
    @classmethod
    def _a_duration(cls, value: str | int | float | None) -> str | int | float | None:
        try:
            parse_keep_alive(value)
        except BadRequest as exc:  # a validation error like the others, with the field's name
            raise ValueError(exc.message) from None
        return value

    @field_validator("envs")
    @classmethod
    def _envs_are_plain_and_not_fleets_own(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name):
                raise ValueError(f"envs: {name!r} is not an environment variable name")
            # The replica's key to the cluster's actor pools: replaced, it cuts the replica off.
            if name in RESERVED_ENVS:
                raise ValueError(f"envs: {name} is set by Fleet and cannot be given")
        return value

    @field_validator("model_uid")
    @classmethod
    def _uid_is_url_safe(cls, value: str | None) -> str | None:
        if value is not None and ("/" in value or value != value.strip()):
            raise ValueError("model_uid must not contain '/' or surrounding spaces")
        # GET /v1/models/estimate is the dry run and /v1/models/instances Xinference's launch
        # status, not models.
        if value in ("estimate", "instances"):
            raise ValueError(f"model_uid {value!r} is reserved")
        return value

    @field_validator("model_format")
    @classmethod
    def _canonical_format(cls, value: str | None) -> str | None:
        # Xinference's `ggufv2` is Fleet's `gguf`: resolved here, once, for launches and
        # their dry runs alike.
        return canonical_format(value) if value else value

    @model_validator(mode="after")
    def _refuse_unsupported(self) -> LaunchRequest:
        extra = self.model_extra or {}
        for key, what in _UNSUPPORTED_LAUNCH_OPTIONS.items():
            if extra.get(key):
                raise ValueError(f"Fleet does not support {what}")
        if extra.get("n_worker") not in (None, 1, "1"):
            raise ValueError("n_worker: a replica runs on one worker in Fleet; "
                             "use replica to run more copies")
        for key, value in extra.items():  # engine options: free-form, kept with the model
            check_depth(value, key)
        return self

    @model_validator(mode="after")
    def _replicas_within_bounds(self) -> LaunchRequest:
        if self.min_replicas is not None and "replica" not in self.model_fields_set:
            self.replica = max(self.replica, self.min_replicas)  # start at the floor
        try:
            check_autoscale({"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                             "replica": self.replica})
        except BadRequest as exc:  # a validation error like the others
            raise ValueError(exc.message) from None
        return self

    @field_validator("n_gpu")
    @classmethod
    def _n_gpu(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and value.lower() in ("none", "null"):
            return None  # how a query string (GET /v1/models/estimate) spells null
        if isinstance(value, str) and value != "auto":
            if not value.isdigit():
                raise ValueError("n_gpu must be an integer, 'auto' or null")
            return int(value)
        return value


def launch_body(body: LaunchRequest, with_defaults: bool = True) -> dict[str, Any]:
    """What the supervisor is asked to launch: the fields set (and, `with_defaults`, the
    defaults of those left out), with the model type in its canonical spelling."""
    payload = body.model_dump(exclude_none=True, exclude_unset=not with_defaults)
    if payload.get("model_type"):
        try:
            payload["model_type"] = normalize_model_type(payload["model_type"])
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    return payload


def checked_launch(entry: Any, uid: str | None = None) -> dict[str, Any]:
    """A launch request read back from elsewhere than the API (`uid`: the model uid it is kept
    under), checked as `POST /v1/models` checks its body: BadRequest with the reason if a
    launch would refuse it. Only what it sets is kept (no defaults added), so that a request
    that is written back reads the same."""
    if not isinstance(entry, dict):
        raise BadRequest(f"it is {json.dumps(entry)[:60]}, not a launch request (an object)")
    try:
        body = LaunchRequest.model_validate(entry if uid is None else {**entry, "model_uid": uid})
    except ValidationError as exc:
        raise BadRequest(validation_message(exc.errors())) from None
    request = launch_body(body, with_defaults=False)
    if "model_uid" not in entry:  # checked as the uid it is kept under, which it does not name
        request.pop("model_uid", None)
    return request
