"""The web UI's files, served at /ui/ without a key: they are the same for everyone and hold no
data (every call the UI makes for data goes through the API and its keys).

Every /ui/ path that is not a file answers index.html, so that each page of the UI has its own
URL (/ui/models/{uid}, /ui/playground/{uid}) that can be shared and reloaded: the front end
routes on `location.pathname`. Files are revalidated on each load (`no-cache` with an ETag, a
304 when unchanged), so an upgraded Fleet never runs a stale mix of modules; they are small,
and gzip-compressed when the browser accepts it (about a quarter of their size)."""

from __future__ import annotations

import gzip
import mimetypes
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from fleet.ui import STATIC_DIR

router = APIRouter(include_in_schema=False)

_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml",
          ".md": "text/markdown; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
_COMPRESSIBLE = (".js", ".css", ".html", ".svg", ".md", ".txt")
_ASSET_FOLDERS = ("js/", "css/", "vendor/")


@lru_cache(maxsize=256)
def _load(path: Path, mtime_ns: int, size: int) -> tuple[bytes, bytes, str]:
    """(body, gzipped body, etag) of one file, kept while its mtime and size stay the same."""
    body = path.read_bytes()
    packed = gzip.compress(body, 6, mtime=0) if path.suffix in _COMPRESSIBLE else body
    return body, packed, f'"{mtime_ns:x}-{size:x}"'


def _static_file(relative: str) -> Path | None:
    """The file under STATIC_DIR that `relative` names, or None (also for `..` escapes)."""
    if not relative or relative.endswith("/"):
        return None
    candidate = (STATIC_DIR / relative).resolve()
    if not candidate.is_relative_to(STATIC_DIR) or not candidate.is_file():
        return None
    return candidate


def _answer(request: Request, path: Path) -> Response:
    stat = path.stat()
    body, packed, etag = _load(path, stat.st_mtime_ns, stat.st_size)
    headers = {"ETag": etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding",
               "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    media_type = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] \
        or "application/octet-stream"
    if packed is not body and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        body = packed
    return Response(body, media_type=media_type, headers=headers)


@router.get("/")
async def root() -> RedirectResponse:
    """A browser opening the server's address lands on the UI."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
async def ui_without_slash() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/{path:path}")
async def ui_file(request: Request, path: str) -> Response:
    found = _static_file(path)
    if found is None:
        if path.startswith(_ASSET_FOLDERS):  # a missing module or stylesheet: 404, not a page
            return Response("not found", status_code=404, media_type="text/plain")
        found = STATIC_DIR / "index.html"
    return _answer(request, found)
