"""What the routes are given of the cluster, in a module of its own: the routes and the app that
includes them both name it, and neither should import the other for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleet.api.image_policy import ImageUrlPolicy
from fleet.api.metrics import FleetMetrics
from fleet.api.routing import ReplicaRouter


@dataclass
class ClusterHandle:
    """What routes need from the cluster: the supervisor, the cached routing table, metrics,
    the stored responses of the Responses API (fleet.api.responses.store; None without a
    database), and the rules for a chat's images (fleet.api.chat_images)."""

    supervisor: Any
    router: ReplicaRouter
    metrics: FleetMetrics
    responses: Any = None
    # What images a chat may bring, and from where (the operator's settings).
    image_policy: ImageUrlPolicy = field(default_factory=ImageUrlPolicy)
