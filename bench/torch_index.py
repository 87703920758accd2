"""A package index on loopback for building the CPU image where PyTorch's own index cannot be
reached: `torch` from a folder of wheels (PyTorch's CPU builds), every other project sent on to
PyPI's index. The image's build reaches it through the host's network (podman build
--network=host), as `TORCH_INDEX_URL`.

    with torch_index(Path("/opt/wheels")) as url: ...   # http://127.0.0.1:39971/

Its port is fixed: the URL is one of the image's build arguments, which its cache is keyed by.
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

PYPI = "https://pypi.org/simple"
PORT = 39971
_PROJECT = re.compile(r"^/([A-Za-z0-9._-]+)/?$")
_FILE = re.compile(r"^/files/([A-Za-z0-9._+-]+\.whl)$")


def _handler(wheels: Path) -> type[BaseHTTPRequestHandler]:
    class Index(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = unquote(self.path)  # pip asks for torch-2.13.0%2Bcpu-...
            project, wheel = _PROJECT.match(path), _FILE.match(path)
            if wheel and (wheels / wheel.group(1)).is_file():
                self._send(200, (wheels / wheel.group(1)).read_bytes(), "application/octet-stream")
            elif project and project.group(1).lower() == "torch":
                links = "".join(f'<a href="/files/{html.escape(p.name)}">{html.escape(p.name)}</a>\n'
                                for p in sorted(wheels.glob("torch-*.whl")))
                self._send(200, f"<html><body>\n{links}</body></html>".encode(), "text/html")
            elif project:
                self.send_response(302)
                self.send_header("Location", f"{PYPI}/{project.group(1)}/")
                self.end_headers()
            else:
                self._send(404, b"not found", "text/plain")

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Index


@contextmanager
def torch_index(wheels: Path, port: int = PORT) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(wheels))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
