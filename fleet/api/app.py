"""`create_app()`: the FastAPI application, built by a factory so tests can make one too."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response

from fleet import __version__
from fleet.api.anthropic.errors import AnthropicErrors
from fleet.api.auth.keys import KeyStore
from fleet.api.auth.live_keys import LiveKeys
from fleet.api.auth.middleware import auth_on, key_store, with_auth
from fleet.api.auth.permissions import OPEN, permission_of
from fleet.api.auth.request_guard import guarded
from fleet.api.cluster_handle import ClusterHandle
from fleet.api.errors import install_error_handlers
from fleet.api.fast_routes import UPLOAD_PATHS, FastJsonRoutes
from fleet.api.image_policy import ImageUrlPolicy
from fleet.api.metering import metered
from fleet.api.metrics import CONTENT_TYPE, FleetMetrics
from fleet.api.openapi import install_openapi
from fleet.api.rate_limits import RateLimiter
from fleet.api.responses.store import ResponseStore, response_store
from fleet.api.routes import audio as routes_audio
from fleet.api.routes import audit as routes_audit
from fleet.api.routes import cache as routes_cache
from fleet.api.routes import embeddings as routes_embeddings
from fleet.api.routes import generation as routes_generation
from fleet.api.routes import images as routes_images
from fleet.api.routes import keys as routes_keys
from fleet.api.routes import management as routes_management
from fleet.api.routes import messages as routes_messages
from fleet.api.routes import overview as routes_overview
from fleet.api.routes import replicas as routes_replicas
from fleet.api.routes import rerank as routes_rerank
from fleet.api.routes import responses as routes_responses
from fleet.api.routes import ui as routes_ui
from fleet.api.routes import usage as routes_usage
from fleet.api.routes import xinference as routes_xinference
from fleet.api.routing import ReplicaRouter
from fleet.api.usage_recorder import UsageRecorder
from fleet.database.audit import AuditLog
from fleet.database.usage import UsageStore
from fleet.server_config import ServerConfig
from fleet.settings import metrics_enabled

# The routes the lean front answers (fleet.api.fast_routes), each declared once in its module.
HOT_ROUTES = (routes_embeddings.EMBEDDINGS, routes_rerank.RERANK, routes_generation.CHAT,
              routes_generation.COMPLETION, routes_messages.MESSAGES, routes_messages.COUNT_TOKENS,
              routes_responses.RESPONSES)


class HttpLatencyMiddleware:
    """Times every request per route template (not per raw path, which would let clients
    create series at will). Plain ASGI: a BaseHTTPMiddleware would cost more than it measures."""

    def __init__(self, app: Any, metrics: FleetMetrics):
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self._metrics.http_latency.labels(path, scope["method"], str(status["code"])).observe(
                time.perf_counter() - started)


def _limiter(keys: LiveKeys) -> RateLimiter:
    records = UsageStore(keys.keys.db)
    return RateLimiter(seed=records.tokens_by_key_since, seed_users=records.tokens_by_user_since)


def create_app(supervisor: Any, supervisor_address: str,
               config: ServerConfig | None = None, keys: KeyStore | None = None,
               usage: UsageRecorder | None = None,
               responses: ResponseStore | None = None) -> Any:
    """The ASGI application: the lean front for the busiest routes, then FastAPI, all timed
    by the latency middleware when metrics are on. `keys`: the cluster's keys, if the caller
    read them (the server, which then follows them); else read here from `config`. `usage`:
    where the requests' usage is recorded (the server runs and closes it); None: nowhere.
    `responses`: the stored responses of the Responses API (the server closes it); else
    made here where there is a database."""
    app = FastAPI(
        title="Fleet",
        version=__version__,
        description="Serve and manage open models: OpenAI-compatible and Xinference-compatible.",
    )
    metrics = FleetMetrics(enabled=metrics_enabled())
    app.state.cluster = ClusterHandle(supervisor=supervisor,
                                      router=ReplicaRouter(supervisor, metrics), metrics=metrics)
    app.state.supervisor_address = supervisor_address
    app.state.config = config = config or ServerConfig()
    app.state.cluster.image_policy = ImageUrlPolicy.from_config(config)
    app.state.auth = store = keys if keys is not None else key_store(config)  # None: open
    # The audit log, where the cluster has a database (its keys are then LiveKeys).
    app.state.audit = AuditLog(store.keys.db) if isinstance(store, LiveKeys) else None
    # The Responses API's stored responses, in the same database.
    if responses is None and isinstance(store, LiveKeys):
        responses = response_store(store.keys.db)
    app.state.cluster.responses = responses
    app.state.started_at = time.time()
    # Per-key limits (fleet.api.rate_limits) and usage records (fleet.api.usage_recorder),
    # fed by fleet.api.metering; None: not kept.
    # The limits are those of keys made through /v1/keys, so they need the database; the
    # budgets spent today and this month are read from its usage records, once, here.
    app.state.limiter = _limiter(store) if isinstance(store, LiveKeys) else None
    app.state.usage = usage
    if usage is not None and config.metrics_per_key and metrics.enabled:
        usage.count_keys_in(metrics)
    install_error_handlers(app)
    app.include_router(routes_xinference.router)  # before /v1/models/{model_uid}
    app.include_router(routes_management.router)
    app.include_router(routes_replicas.router)
    app.include_router(routes_embeddings.router)
    app.include_router(routes_rerank.router)
    app.include_router(routes_generation.router)
    app.include_router(routes_messages.router)
    app.include_router(routes_responses.router)
    app.include_router(routes_cache.router)
    app.include_router(routes_images.router)
    app.include_router(routes_audio.router)
    app.include_router(routes_overview.router)
    app.include_router(routes_keys.router)
    app.include_router(routes_audit.router)
    app.include_router(routes_usage.router)
    app.include_router(routes_ui.router)  # the web UI's files (fleet/ui/static)

    # The OpenAPI document lists 401/403 on the routes that keys guard, when there are keys.
    install_openapi(app, (lambda method, path: permission_of(method, path) != OPEN)
                    if auth_on(store) else None)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        return Response(await metrics.render(supervisor), media_type=CONTENT_TYPE)

    cluster = app.state.cluster
    front = FastJsonRoutes(app, [route.bound(cluster) for route in HOT_ROUTES])
    # Keys are checked behind the browser checks: a page that rebinds its name is refused
    # before anything else reads its request (fleet.api.auth.request_guard).
    # Behind the key check, which puts the request's Grant where metering reads it.
    served = guarded(with_auth(metered(front, app.state.limiter, app.state.usage), app, store,
                               config), config.host, config.allowed_hosts,
                     config.cors_origins, UPLOAD_PATHS)
    # Outside every layer that may refuse a request, so that each refusal on the Messages
    # routes takes Anthropic's shape (fleet.api.anthropic.errors).
    served = AnthropicErrors(served)
    return HttpLatencyMiddleware(served, metrics) if metrics.enabled else served
