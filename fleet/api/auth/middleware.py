"""API keys at the door: an ASGI middleware in front of the whole application (the lean front
for the busiest routes and FastAPI alike) that lets a request in only with a key that holds
the permission its route needs (fleet.api.auth.permissions), and the checks that need the
request's body, made where the body is read.

Plain ASGI, not Starlette's BaseHTTPMiddleware: on the inference routes the check is a header
scan, one SHA-256, one dict lookup and a constant-time comparison, and nothing else is added.
A server with a database installs it always, since a key made through the API turns keys on
while it runs (fleet.api.auth.live_keys); until then it passes every request on after one
attribute test. An application without a database and without keys (a test's) leaves it out.

Answers: 401 with `WWW-Authenticate: Bearer` for a missing or unknown key, 403 for a key without
the permission or the model, both in OpenAI's error shape."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

import orjson

from fleet.api.auth.keys import Grant, KeyStore
from fleet.api.auth.permissions import (
    ANY_KEY,
    MODEL_PATH_PARAM,
    OPEN,
    STOP,
    RouteRules,
    Rule,
    app_routes,
)
from fleet.api.errors import error_body
from fleet.cluster_secret import SpentProofs, check_timed_proof
from fleet.errors import BadRequest, Forbidden
from fleet.server_config import ServerConfig

logger = logging.getLogger(__name__)

GRANT_SCOPE_KEY = "fleet.grant"  # where the request's Grant waits for the route's own checks
WORKER_PROOF_HEADER = b"x-fleet-worker-proof"
WORKER_PROOF_PURPOSE = "address"
_BEARER = b"bearer "


def _reply_parts(status: int, message: str, error_type: str, code: str,
                 extra: list[tuple[bytes, bytes]]) -> tuple[dict, dict]:
    body = orjson.dumps(error_body(message, error_type, code))
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()), *extra]}
    return start, {"type": "http.response.body", "body": body}


_MISSING = _reply_parts(401, "this server needs an API key: send 'Authorization: Bearer <key>' "
                        "(or 'x-api-key: <key>')",
                        "authentication_error", "invalid_api_key",
                        [(b"www-authenticate", b"Bearer")])
_UNKNOWN = _reply_parts(401, "invalid API key", "authentication_error", "invalid_api_key",
                        [(b"www-authenticate", b'Bearer error="invalid_token"')])


def _request_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The key of `Authorization: Bearer <key>` (OpenAI's clients), else of `x-api-key: <key>`
    (Anthropic's), on every route: a client sends its key the one way it knows."""
    other = None
    for name, value in headers:
        if name == b"authorization":
            return value[7:].strip() or None if value[:7].lower() == _BEARER else None
        if name == b"x-api-key":
            other = value.strip() or None
    return other


def _header(headers: list[tuple[bytes, bytes]], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name == wanted:
            return value
    return None


class AuthMiddleware:
    """ASGI: answers 401/403 itself, or passes the request on with its Grant in the scope."""

    def __init__(self, app: Any, store: KeyStore, rules: RouteRules,
                 cluster_secret: str | None = None):
        self._app = app
        self._store = store
        self._rules = rules
        self._cluster_secret = cluster_secret
        self._spent = SpentProofs()  # a worker's proof opens /v1/address once

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if self._store.open:  # no key anywhere yet (fleet.api.auth.live_keys)
            await self._app(scope, receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":  # Fleet serves none; nothing gets in without a key either
            key = _request_key(scope["headers"])
            if key is None or self._store.find(key) is None:
                await send({"type": "websocket.close", "code": 1008})
                return
            await self._app(scope, receive, send)
        else:  # lifespan
            await self._app(scope, receive, send)

    async def _http(self, scope: dict, receive: Any, send: Any) -> None:
        rule, params = self._rules.match(scope["method"], scope["path"])
        if rule.permission == OPEN:
            await self._app(scope, receive, send)
            return
        key = _request_key(scope["headers"])
        grant = self._store.find(key) if key is not None else None
        if grant is None:
            if rule.worker_proof and self._worker_proven(scope):
                await self._app(scope, receive, send)
                return
            start, body = _MISSING if key is None else _UNKNOWN
            await send(start)
            await send(body)
            return
        problem = _refusal(grant, rule, params)
        if problem is not None:
            start, body = _reply_parts(403, problem[0], "permission_error", problem[1], [])
            await send(start)
            await send(body)
            return
        scope[GRANT_SCOPE_KEY] = grant
        await self._app(scope, receive, send)

    def _worker_proven(self, scope: dict) -> bool:
        proof = _header(scope["headers"], WORKER_PROOF_HEADER)
        if not self._cluster_secret or proof is None:
            return False
        text = proof.decode("latin-1")
        return (check_timed_proof(self._cluster_secret, WORKER_PROOF_PURPOSE, text)
                and self._spent.spend(text))


def _refusal(grant: Grant, rule: Rule, params: dict[str, str]) -> tuple[str, str] | None:
    """(message, code) when the key may not make this request."""
    if rule.permission != ANY_KEY and not grant.allows(rule.permission):
        return (f"this API key lacks the permission {rule.permission!r} that this route needs",
                "permission_denied")
    model = params.get(MODEL_PATH_PARAM)
    if rule.model_param and model is not None and not grant.may_use(model):
        return _model_message(model), "model_not_allowed"
    return None


def _model_message(model: str) -> str:
    return f"this API key may not use the model {model!r}"


def check_model(scope: dict, model: str) -> None:
    """Raises Forbidden when the request's key is limited to models that exclude `model`
    (for the routes that name their model in the body: inference, launch)."""
    grant = scope.get(GRANT_SCOPE_KEY)
    if grant is not None and grant.models is not None and model not in grant.models:
        raise Forbidden(_model_message(model), code="model_not_allowed")


# The models a hot route's request may use when its key is limited to some (unset: any), for a
# handler that reaches a model's data by another name than the body's `model`: a stored
# response that a Responses request continues (fleet.api.routes.responses).
_allowed_models: ContextVar[frozenset[str] | None] = ContextVar("fleet_allowed_models",
                                                                 default=None)


def check_stored_model(model: str) -> None:
    """Raises Forbidden when the hot request's key may not use `model` (that of a stored
    response it names), as check_model does for the model its body names."""
    allowed = _allowed_models.get()
    if allowed is not None and model not in allowed:
        raise Forbidden(_model_message(model), code="model_not_allowed")


def check_hot_body(scope: dict, body: Any) -> None:
    """The checks of a hot route's body (fleet.api.fast_routes), none without keys: its model
    (check_model), and Ollama's `keep_alive`, which decides when the model is unloaded for
    everyone who uses it, so a key needs models:stop to send it, as to stop the model."""
    grant = scope.get(GRANT_SCOPE_KEY)
    if grant is None:
        return
    check_model(scope, str(getattr(body, "model", "")))
    if grant.models is not None:
        _allowed_models.set(frozenset(grant.models))
    if getattr(body, "keep_alive", None) is not None and not grant.allows(STOP):
        raise Forbidden(f"keep_alive decides when the model is unloaded, which needs the "
                        f"permission {STOP!r} that this API key lacks; leave it out",
                        code="permission_denied")


def visible_models(scope: dict, models: list[dict[str, Any]], uid_field: str) -> list[dict]:
    """The models of a listing that the request's key may use."""
    grant = scope.get(GRANT_SCOPE_KEY)
    if grant is None or grant.models is None:
        return models
    return [m for m in models if m.get(uid_field) in grant.models]


def key_store(config: ServerConfig) -> KeyStore | None:
    """The cluster's keys: with a database, those of the command line and those made through
    the API (read now, then followed: fleet.api.auth.live_keys); without one (an application
    built by a test), the command line's, or None when there are none (the middleware is then
    left out)."""
    if config.database_url is not None:
        from fleet.api.auth.live_keys import LiveKeys
        from fleet.database import Database
        from fleet.database.api_keys import DatabaseKeys

        static = KeyStore.build(config.api_key_hashes, config.auth_config).static \
            if config.auth_enabled else {}
        live = LiveKeys(static, DatabaseKeys(Database(config.database_url)))
        live.load()
        return live
    if not config.auth_enabled:
        return None
    return KeyStore.build(config.api_key_hashes, config.auth_config)


def auth_on(store: KeyStore | None) -> bool:
    """Whether requests need a key now."""
    return store is not None and not store.open


def with_auth(app: Any, fastapi_app: Any, store: KeyStore | None, config: ServerConfig) -> Any:
    """`app` behind the key check when the cluster has keys."""
    if store is None:
        return app
    rules = RouteRules(app_routes(fastapi_app), metrics_public=config.metrics_public)
    return AuthMiddleware(app, store, rules, getattr(config, "cluster_secret", None))


def check_exposure(config: ServerConfig) -> None:
    """Refuses to serve the API beyond this machine without keys, unless told to."""
    if config.on_loopback or config.auth_enabled:
        return
    if not config.insecure_no_auth:
        raise BadRequest(
            f"refusing to serve on {config.host} without API keys: anyone who reaches port "
            f"{config.port} could launch and stop models and run code on this cluster. Give "
            "--api-key KEY (or FLEET_API_KEY) or --auth-config FILE, or --insecure-no-auth to "
            "serve without keys anyway")
    logger.warning(
        "INSECURE: serving on %s:%d WITHOUT API KEYS (--insecure-no-auth): anyone who can reach "
        "this port can launch, stop and call models and run code on this cluster",
        config.host, config.port)
