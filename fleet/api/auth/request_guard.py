"""The API's outer door: which requests a browser may make it serve.

A key-less `fleet local` listens on loopback and trusts its callers, since they are on the
machine already. A web page open in that machine's browser is not: without these checks it could
(1) rebind its own name to 127.0.0.1 (DNS rebinding) and then call the API as a same-origin page,
launching a model with `trust_remote_code`, and (2) send "simple" cross-site POSTs (`text/plain`,
forms), which a browser sends without asking the server first. So, on every request, before the
key check:

- `Host` must name this server: its listen address, `localhost` on loopback, any IP literal when
  it listens on every interface (a rebinding page cannot use a literal: its origin is a name),
  this machine's own name then too, and the names the operator gives (`--allowed-host`; `*`
  turns the check off, for a proxy that rewrites Host). 400 otherwise.
- A request that can change state (anything but GET, HEAD, OPTIONS) from a page of another
  origin is refused, 403, unless the operator allowed that origin (`--cors-origin`). Browsers
  name the page's origin in `Origin` on every such request (`null` for sandboxed and file pages).
- A body sent to a JSON route must say it is JSON (`Content-Type: application/json`): 415
  otherwise. A page cannot send a JSON body, nor any request with custom headers, to another
  origin without that server's consent (a CORS preflight, answered only for the allowed
  origins). Upload routes take multipart forms, and refuse anything else themselves.

CORS is off unless `--cors-origin` names origins (or `*`): then Starlette's CORS middleware
answers their preflights and labels the answers they may read.

Plain ASGI, one pass over the headers: it runs before every request of the hot routes."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import orjson

from fleet.api.errors import error_body

ANY = "*"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(value: str) -> str:
    """The name part of a Host header or listen address: lower case, port and IPv6 brackets
    and a trailing dot dropped."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:9997
        return value[1:value.find("]")] if "]" in value else value
    if value.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class HostRule:
    """Which Host names the server answers to."""

    def __init__(self, listen: str, allowed: Iterable[str] = ()) -> None:
        allowed = [host_name(name) for name in allowed]
        self.any = ANY in allowed
        listen = host_name(listen)
        self._wildcard = listen in _WILDCARD_BINDS
        self._loopback = _is_loopback_name(listen)
        names = {listen, *(a for a in allowed if not a.startswith("*."))}
        if self._wildcard:
            names |= {"localhost", *_machine_names()}
        self._names = frozenset(names)
        # "*.example.com": every name under example.com (not example.com itself).
        self._suffixes = tuple(a[1:] for a in allowed if a.startswith("*."))

    def allows(self, name: str) -> bool:
        if self.any or name in self._names:
            return True
        if self._suffixes and name.endswith(self._suffixes):
            return True
        if self._loopback:  # localhost, 127.0.0.2, [::1]...: all of them this machine
            return _is_loopback_name(name)
        return self._wildcard and _is_ip_literal(name)


def _machine_names() -> set[str]:
    """This machine's own names, which a client on the network may use for it."""
    names = set()
    for read in (socket.gethostname, socket.getfqdn):
        try:
            names.add(host_name(read()))
        except OSError:
            continue
    return {n for n in names if n}


def _reply(status: int, message: str, code: str, error_type: str = "invalid_request_error"
           ) -> tuple[dict, dict]:
    body = orjson.dumps(error_body(message, error_type, code))
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    return start, {"type": "http.response.body", "body": body}


_NOT_JSON = _reply(
    415, "this route takes a JSON body: send it with 'Content-Type: application/json'",
    "unsupported_media_type")


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"0", b"")
    return b"transfer-encoding" in headers


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/")
                                            and media.endswith(b"+json"))


class RequestGuard:
    """ASGI: refuses what a browser must not make the API do (see the module's docstring)."""

    def __init__(self, app: Any, hosts: HostRule, cors_origins: Iterable[str] = (),
                 upload_paths: frozenset[str] = frozenset()) -> None:
        self._app = app
        self._hosts = hosts
        origins = {o.strip().rstrip("/").lower() for o in cors_origins}
        self._any_origin = ANY in origins
        self._origins = frozenset(o.encode() for o in origins if o != ANY)
        self._upload_paths = upload_paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is None:
            await self._app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            await send(refusal[0])
            await send(refusal[1])

    def _refusal(self, scope: dict) -> tuple[dict, dict] | None:
        headers = dict(scope["headers"])
        host = headers.get(b"host")
        if host is not None and not self._hosts.allows(host_name(host.decode("latin-1"))):
            name = host.decode("latin-1")
            return _reply(400, f"this server does not answer to the host name {name!r}: a "
                          "request for another name may come from a web page that rebound its "
                          f"name to this server. The operator allows it with --allowed-host "
                          f"{host_name(name)}", "host_not_allowed")
        method = scope.get("method", "GET")
        if method in _SAFE_METHODS:
            return None
        origin = headers.get(b"origin")
        if origin is not None and not self._same_origin(origin, host) and not self._allowed(origin):
            return _reply(403, f"requests from the web page at {origin.decode('latin-1')!r} may "
                          "not change this server's state; the operator allows an origin with "
                          "--cors-origin", "origin_not_allowed", "permission_error")
        if (scope["type"] == "http" and scope["path"] not in self._upload_paths
                and _has_body(headers) and not _is_json(headers.get(b"content-type", b""))):
            return _NOT_JSON
        return None

    def _allowed(self, origin: bytes) -> bool:
        return origin != b"null" and (self._any_origin or origin.lower() in self._origins)

    @staticmethod
    def _same_origin(origin: bytes, host: bytes | None) -> bool:
        """Whether `Origin` (scheme://host[:port]) names the server the request came to."""
        if host is None:
            return False
        _, _, authority = origin.lower().partition(b"://")
        return bool(authority) and authority == host.lower()


def guarded(app: Any, listen: str, allowed_hosts: Iterable[str], cors_origins: Iterable[str],
            upload_paths: frozenset[str]) -> Any:
    """`app` behind the request guard, and behind CORS for the origins the operator named."""
    origins = [o.strip().rstrip("/") for o in cors_origins]
    if origins:
        from starlette.middleware.cors import CORSMiddleware

        app = CORSMiddleware(app, allow_origins=origins, allow_methods=["*"],
                             allow_headers=["*"], expose_headers=["*"])
    return RequestGuard(app, HostRule(listen, allowed_hosts), origins, upload_paths)
