"""Which permission each route needs: one table, route template -> permission, and the matcher
that finds a request's route the way the application itself would.

Mirrors Xinference's mapping where Fleet has the same route (inference needs `models:read`,
reading models and registrations `models:list`, the cache `cache:list` / `cache:delete`), with
Xinference's older, finer names for launching and stopping (`models:start`, `models:stop`) and
for registering (`models:register`, `models:unregister`). Departures, each for a reason:
- `/status` and `GET /v1/cluster/auth` need no key: health checks and load balancers probe the
  first, and Xinference's client asks the second, without a key, whether to send one.
- `/v1/models/{uid}/progress` is `models:list` (status, like describing the model), so that a
  key that may launch and list can follow its launch.
- The estimate is `models:start`: it is a dry run of a launch and looks at the workers.
- An inference request that carries Ollama's `keep_alive` needs `models:stop` too: it decides
  when the model is unloaded for every user of it (checked where the body is read,
  fleet.api.auth.middleware.check_hot_body).
- `/metrics` is `metrics:read` (Fleet's own name), so a Prometheus scraper needs no admin key;
  `--metrics-public` opens it.
- The API's own description (`/docs`, `/redoc`, `/openapi.json`) needs a key, any key: every
  route but /status closes when keys are on, and it tells a stranger what the server runs,
  while every key holder needs it.
A route missing from the table needs `admin` (closed by default), and a test holds every route
of the application to an entry here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from starlette.routing import compile_path

from fleet.api.auth.keys import ADMIN

OPEN = "open"  # no key needed
ANY_KEY = "any key"  # a valid key, whatever its permissions

LIST, READ, START, STOP = "models:list", "models:read", "models:start", "models:stop"
REGISTER, UNREGISTER = "models:register", "models:unregister"

ROUTE_PERMISSIONS: dict[tuple[str, str], str] = {
    ("GET", "/status"): OPEN,
    ("GET", "/v1/cluster/auth"): OPEN,
    ("GET", "/openapi.json"): ANY_KEY,
    ("GET", "/docs"): ANY_KEY,
    ("GET", "/docs/oauth2-redirect"): ANY_KEY,
    ("GET", "/redoc"): ANY_KEY,
    ("GET", "/metrics"): "metrics:read",
    ("GET", "/v1/address"): ADMIN,  # or a worker's proof of the cluster secret
    ("GET", "/v1/cluster/info"): ADMIN,
    ("GET", "/v1/workers"): ADMIN,
    ("POST", "/v1/embeddings"): READ,
    ("POST", "/v1/rerank"): READ,
    ("POST", "/v1/chat/completions"): READ,
    ("POST", "/v1/completions"): READ,
    ("POST", "/v1/messages"): READ,  # Anthropic's Messages API (fleet.api.routes.messages)
    ("POST", "/v1/messages/count_tokens"): READ,
    ("POST", "/v1/responses"): READ,  # OpenAI's Responses API (fleet.api.routes.responses)
    ("GET", "/v1/responses/{response_id}"): READ,
    ("DELETE", "/v1/responses/{response_id}"): READ,
    ("GET", "/v1/responses/{response_id}/input_items"): READ,
    ("POST", "/v1/images/generations"): READ,
    ("POST", "/v1/images/variations"): READ,
    ("POST", "/v1/images/edits"): READ,
    ("POST", "/v1/images/inpainting"): READ,
    ("POST", "/v1/images/ocr"): READ,
    ("GET", "/v1/images/files/{name}"): READ,  # the images of `url` answers
    ("POST", "/v1/audio/transcriptions"): READ,
    ("POST", "/v1/audio/translations"): READ,
    ("POST", "/v1/audio/speech"): READ,
    ("GET", "/v1/requests/{request_id}/progress"): READ,
    ("GET", "/v1/models"): LIST,
    ("POST", "/v1/models"): START,
    ("GET", "/v1/models/estimate"): START,
    ("GET", "/v1/models/instances"): LIST,
    ("GET", "/v1/models/{model_uid}"): LIST,
    ("DELETE", "/v1/models/{model_uid}"): STOP,
    ("POST", "/v1/models/{model_uid}/cancel"): STOP,
    ("GET", "/v1/models/{model_uid}/progress"): LIST,
    ("GET", "/v1/models/{model_uid}/replicas"): LIST,
    ("POST", "/v1/models/{model_uid}/replicas"): START,  # scaling up starts replicas
    ("DELETE", "/v1/models/{model_uid}/replicas/{replica_id}"): STOP,
    ("POST", "/v1/models/{model_uid}/autoscale"): START,  # it may start replicas
    ("PUT", "/v1/models/{model_uid}/aliases"): START,  # part of how the model was launched
    ("GET", "/v1/models/{model_uid}/events"): LIST,
    ("POST", "/v1/model_registrations/{model_type}"): REGISTER,
    ("GET", "/v1/model_registrations/{model_type}"): LIST,
    ("GET", "/v1/model_registrations/{model_type}/{model_name}"): LIST,
    ("DELETE", "/v1/model_registrations/{model_type}/{model_name}"): UNREGISTER,
    ("GET", "/v1/engines/{model_name}"): LIST,
    ("GET", "/v1/engines/{model_type}/{model_name}"): LIST,
    ("GET", "/v1/cache/models"): "cache:list",
    ("GET", "/v1/cache/models/files"): "cache:list",
    ("DELETE", "/v1/cache/models"): "cache:delete",
    # The web UI (fleet.api.routes.ui, routes_overview). Its files hold no data, so they are
    # open; the overview gives workers' resources only to a key that may read metrics.
    ("GET", "/"): OPEN,
    ("GET", "/ui"): OPEN,
    ("GET", "/ui/{path:path}"): OPEN,
    ("GET", "/v1/cluster/overview"): LIST,
    ("GET", "/v1/auth/me"): ANY_KEY,
    ("GET", "/v1/engines"): LIST,
    # Keys made while the cluster runs, and the audit log (fleet.api.routes.keys, audit).
    ("POST", "/v1/keys"): ADMIN,
    ("GET", "/v1/keys"): ADMIN,
    ("GET", "/v1/keys/{key_id}"): ADMIN,
    ("PATCH", "/v1/keys/{key_id}"): ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): ADMIN,
    ("GET", "/v1/users"): ADMIN,
    ("PUT", "/v1/users/{name}/limits"): ADMIN,
    ("GET", "/v1/audit"): ADMIN,
    # Usage (fleet.api.routes.usage): any key, which sees only its own unless it is admin.
    ("GET", "/v1/usage"): ANY_KEY,
}
# Routes that name a running model in their path: a key limited to some models is held to them.
MODEL_PATH_PARAM = "model_uid"
WORKER_PROOF_ROUTE = "/v1/address"


@dataclass(frozen=True, slots=True)
class Rule:
    permission: str
    model_param: bool = False  # the path's {model_uid} must be one of the key's models
    worker_proof: bool = False  # a worker's proof of the cluster secret also opens it


UNMATCHED = Rule(ANY_KEY)  # a 404 or 405 from the app: a key, so strangers learn nothing


def app_routes(app: Any) -> list[tuple[str, frozenset[str]]]:
    """(path template, methods) of a FastAPI application's routes, in the order it tries them
    (included routers flattened where FastAPI keeps them nested)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # FastAPI before 0.165 kept one flat list
        routes: Any = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    found = []
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods:
            found.append((path, frozenset(methods)))
    return found


def permission_of(method: str, template: str) -> str:
    method = "GET" if method == "HEAD" else method
    return ROUTE_PERMISSIONS.get((method, template), ADMIN)


class RouteRules:
    """A request's Rule, from the application's own routes in their order: the first route
    whose path and method match is the one the application will run. Paths without parameters
    are one dict lookup (the inference routes among them)."""

    def __init__(self, routes: list[tuple[str, frozenset[str]]], metrics_public: bool = False):
        self._exact: dict[tuple[str, str], Rule] = {}
        self._patterns: list[tuple[re.Pattern[str], dict[str, Rule]]] = []
        for path, methods in routes:
            rules = {method: self._rule(method, path, metrics_public) for method in methods}
            if "{" not in path:
                for method, rule in rules.items():
                    if not self._shadowed(method, path):
                        self._exact.setdefault((method, path), rule)
            self._patterns.append((compile_path(path)[0], rules))

    @staticmethod
    def _rule(method: str, path: str, metrics_public: bool) -> Rule:
        permission = permission_of(method, path)
        if path == "/metrics" and metrics_public:
            permission = OPEN
        return Rule(permission, model_param=f"{{{MODEL_PATH_PARAM}}}" in path,
                    worker_proof=path == WORKER_PROOF_ROUTE)

    def _shadowed(self, method: str, path: str) -> bool:
        """Whether an earlier route with parameters would take this path first."""
        return any(method in rules and pattern.match(path) for pattern, rules in self._patterns)

    def match(self, method: str, path: str) -> tuple[Rule, dict[str, str]]:
        rule = self._exact.get((method, path))
        if rule is not None:
            return rule, {}
        for pattern, rules in self._patterns:
            rule = rules.get(method)
            if rule is not None:
                found = pattern.match(path)
                if found:
                    return rule, found.groupdict()
        return UNMATCHED, {}
