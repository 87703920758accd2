"""A stand-in for the Hugging Face Hub on loopback, serving repositories from local folders.

The hub cannot be reached from the test machines; this is the edge where a stand-in takes its
place, so that Fleet's real download path (huggingface_hub's `snapshot_download` and
`hf_hub_download` against `HF_ENDPOINT`) runs unchanged. It answers the three calls those make:
the repository's file list, a HEAD for each file's metadata, and the file itself (with Range)."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0" * 39 + "1"


class FakeHub:
    """`repos` maps a repository id (`owner/name`) to the local folder that holds its files."""

    def __init__(self, repos: dict[str, Path], seconds_per_mib: float = 0.0):
        """`seconds_per_mib` slows file bodies down, so a test can watch a download progress."""
        self.repos = repos
        self.seconds_per_mib = seconds_per_mib
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                return None

            def do_GET(self) -> None:
                hub._answer(self, body=True)

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _files(self, repo: str) -> list[str]:
        root = self.repos[repo]
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(handler.path).path)
        self.requests.append(f"{handler.command} {path}")
        if path.startswith("/api/models/") and "/tree/" in path:
            return self._tree(handler, path.removeprefix("/api/models/").split("/tree/")[0])
        if path.startswith("/api/models/"):
            return self._repo_info(handler, path.removeprefix("/api/models/"))
        if "/resolve/" in path:
            repo, _, rest = path.lstrip("/").partition("/resolve/")
            _revision, _, filename = rest.partition("/")
            return self._file(handler, repo, filename, body)
        self._send(handler, 404, b'{"error": "not found"}', {"Content-Type": "application/json"})

    def _repo_info(self, handler: BaseHTTPRequestHandler, rest: str) -> None:
        repo = rest.split("/revision/")[0]
        if repo not in self.repos:
            return self._send(handler, 404, b'{"error": "Repository not found"}',
                              {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"})
        info = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False,
                "siblings": [{"rfilename": name} for name in self._files(repo)]}
        self._send(handler, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})

    def _tree(self, handler: BaseHTTPRequestHandler, repo: str) -> None:
        if repo not in self.repos:
            return self._send(handler, 404, b'{"error": "Repository not found"}',
                              {"Content-Type": "application/json", "X-Error-Code": "RepoNotFound"})
        root = self.repos[repo]
        entries = []
        for name in self._files(repo):
            data = (root / name).read_bytes()
            entries.append({"type": "file", "path": name, "size": len(data),
                            "oid": hashlib.sha1(data).hexdigest()})
        self._send(handler, 200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

    def _file(self, handler: BaseHTTPRequestHandler, repo: str, filename: str, body: bool) -> None:
        root = self.repos.get(repo)
        target = (root / filename).resolve() if root else None
        if target is None or not target.is_file() or root.resolve() not in target.parents:
            return self._send(handler, 404, b"", {"X-Error-Code": "EntryNotFound"}, body)
        data = target.read_bytes()
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                   "Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
        status, start = 200, 0
        ranged = handler.headers.get("Range", "")
        if ranged.startswith("bytes="):
            start = int(ranged.removeprefix("bytes=").split("-")[0] or 0)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(handler, status, data[start:], headers, body)

    def _send(self, handler: BaseHTTPRequestHandler, status: int, data: bytes,
              headers: dict[str, str], body: bool = True) -> None:
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(data))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        if not body:
            return
        mib = 1 << 20
        for offset in range(0, len(data), mib):
            handler.wfile.write(data[offset:offset + mib])
            if self.seconds_per_mib:
                time.sleep(self.seconds_per_mib)
