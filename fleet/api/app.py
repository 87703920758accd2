"""`create_app()`: the FastAPI application, built by a factory so tests can make one too."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from fleet import __version__
from fleet.api import routes_embeddings, routes_management, routes_rerank
from fleet.api.errors import install_error_handlers
from fleet.api.routing import ReplicaRouter


@dataclass
class ClusterHandle:
    """What routes need from the cluster: the supervisor and the cached routing table."""

    supervisor: Any
    router: ReplicaRouter


def create_app(supervisor: Any, supervisor_address: str) -> FastAPI:
    app = FastAPI(
        title="Fleet",
        version=__version__,
        description="Serve and manage open models: OpenAI-compatible and Xinference-compatible.",
    )
    app.state.cluster = ClusterHandle(supervisor=supervisor, router=ReplicaRouter(supervisor))
    app.state.supervisor_address = supervisor_address
    app.state.started_at = time.time()
    install_error_handlers(app)
    app.include_router(routes_management.router)
    app.include_router(routes_embeddings.router)
    app.include_router(routes_rerank.router)
    return app
