"""A hot route declared once: the lean front (fleet.api.fast_routes) answers it, and FastAPI
holds the same route so that /docs and /openapi.json describe it.

A route module declares each of its hot routes as one `HotRoute` and calls `declare` on its
router; the application binds the same values to the cluster for the front. Path, body model
and handler are then written in one place, so the two can never drift apart (a path renamed
in one table and not the other would leave the front answering a route the document does not
list, or FastAPI answering it slowly)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from fleet.api.fast_routes import EventStream, FastRoute

if TYPE_CHECKING:
    from fleet.api.cluster_handle import ClusterHandle


@dataclass(frozen=True)
class HotRoute:
    """POST `path`: `serve(cluster, validated_body) -> JSON bytes or an EventStream`. `name` is
    FastAPI's name for the route (its operationId in the document); with `watch_disconnect`
    the answer is cancelled when the client leaves."""

    path: str
    body_model: type[BaseModel]
    serve: Callable[[ClusterHandle, Any], Awaitable[bytes | EventStream]]
    name: str
    watch_disconnect: bool = False

    def bound(self, cluster: ClusterHandle) -> FastRoute:
        """The route as the front serves it, on this cluster."""
        serve = self.serve
        return FastRoute(self.path, self.body_model, lambda body: serve(cluster, body),
                         watch_disconnect=self.watch_disconnect)

    def declare(self, router: APIRouter) -> None:
        """The same route in FastAPI, reached only where the front is not in the way (an
        application built without it); the body model in its signature is what the OpenAPI
        document shows."""
        serve = self.serve

        async def endpoint(request: Request, body: Any) -> Response:
            answer = await serve(request.app.state.cluster, body)
            if isinstance(answer, bytes):
                return Response(answer, media_type="application/json")
            return StreamingResponse(answer.events, headers=dict(answer.headers))

        # FastAPI reads the body's model from the signature; set it here rather than in an
        # annotation, which would have to name one model for every route.
        endpoint.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation=Request),
            inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              annotation=self.body_model),
        ], return_annotation=Response)
        router.add_api_route(self.path, endpoint, methods=["POST"], name=self.name)
