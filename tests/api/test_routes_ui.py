"""The web UI's routes, in-process: its files (index.html for every page URL, 404 for a missing
asset, no escape from the folder, gzip, 304 on an unchanged ETag), the cluster overview (one
answer, workers only for a key that may read metrics, models limited to the key's), what a key
may do, the engine list; and the UI's files themselves: every module a file imports exists,
and every vendored file is listed with its checksum."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleet.api.app import create_app
from fleet.api.auth.keys import hash_key
from fleet.server_config import ServerConfig
from fleet.ui import STATIC_DIR

ADMIN_KEY = "sk-ui-admin-0123456789"
READER_KEY = "sk-ui-reader-0123456789"
LIMITED_KEY = "sk-ui-limited-0123456789"


class FakeSupervisor:
    """What the overview asks of the supervisor, with two models and one worker."""

    async def list_workers(self) -> list[dict[str, Any]]:
        return [{"address": "10.0.0.2:1234", "resources": {"cpu_count": 2, "memory_total": 8}}]

    async def list_models(self) -> list[dict[str, Any]]:
        return [{"model_uid": uid, "id": uid, "status": "ready"} for uid in ("b-model", "a-model")]

    async def replica_metrics(self) -> list[dict[str, Any]]:
        return [{"model": "a-model", "replica_uid": "a-model-0", "replica_id": 0, "state": "ready",
                 "memory_bytes": 123, "restarts": 2, "batch": {"queued": 0}}]


def _app(keys: bool = False, tmp_path: Path | None = None) -> Any:
    config = ServerConfig()
    if keys:
        auth = tmp_path / "auth.json"
        auth.write_text(json.dumps({"user_config": [
            {"username": "reader", "permissions": ["models:list"], "api_keys": [READER_KEY]},
            {"username": "limited", "permissions": ["models:list", "metrics:read"],
             "api_keys": [{"key": LIMITED_KEY, "models": ["a-model"]}]}]}))
        config = ServerConfig(api_key_hashes=[hash_key(ADMIN_KEY)], auth_config=auth)
    return create_app(FakeSupervisor(), "127.0.0.1:1", config)


def _get(app: Any, path: str, key: str | None = None, **headers: str) -> httpx.Response:
    if key:
        headers["Authorization"] = f"Bearer {key}"

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def test_every_page_url_answers_index_html_and_the_root_redirects():
    app = _app()
    for path in ("/ui/", "/ui/cluster", "/ui/models/some-uid", "/ui/playground/x/chat"):
        answer = _get(app, path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/ui/js/main.js">' in answer.text
    for path in ("/", "/ui"):
        answer = _get(app, path)
        assert answer.status_code == 307 and answer.headers["location"] == "/ui/"


def test_files_have_their_types_and_missing_or_outside_files_are_refused():
    app = _app()
    module = _get(app, "/ui/js/main.js")
    assert module.status_code == 200
    assert module.headers["content-type"].startswith("text/javascript")
    assert module.text == (STATIC_DIR / "js/main.js").read_text()
    assert _get(app, "/ui/css/app.css").headers["content-type"].startswith("text/css")
    assert _get(app, "/ui/js/no-such-module.js").status_code == 404
    assert _get(app, "/ui/vendor/nothing.js").status_code == 404
    for escape in ("/ui/..%2f__init__.py", "/ui/js/..%2F..%2F__init__.py"):
        answer = _get(app, escape)
        assert "STATIC_DIR" not in answer.text  # fleet/ui/__init__.py never leaks


def test_gzip_when_accepted_and_304_when_unchanged():
    app = _app()
    plain = (STATIC_DIR / "vendor/preact.module.js").read_bytes()
    packed = _get(app, "/ui/vendor/preact.module.js", **{"Accept-Encoding": "gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert int(packed.headers["content-length"]) < len(plain) / 2
    assert packed.content == plain  # httpx decodes it
    assert packed.headers["cache-control"] == "no-cache"
    again = _get(app, "/ui/vendor/preact.module.js", **{"If-None-Match": packed.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_overview_is_one_answer_with_live_replicas():
    answer = _get(_app(), "/v1/cluster/overview")
    assert answer.status_code == 200
    body = answer.json()
    assert body["workers"][0]["address"] == "10.0.0.2:1234"
    assert [m["model_uid"] for m in body["models"]] == ["a-model", "b-model"]  # sorted
    replica = body["models"][0]["replicas"][0]
    assert replica["memory_bytes"] == 123 and replica["restarts"] == 2
    assert "batch" not in replica  # only what the page shows
    assert body["models"][1]["replicas"] == []


def test_the_overview_hides_workers_from_a_key_that_may_not_read_metrics(tmp_path):
    app = _app(keys=True, tmp_path=tmp_path)
    assert _get(app, "/v1/cluster/overview").status_code == 401
    reader = _get(app, "/v1/cluster/overview", READER_KEY).json()
    assert reader["workers"] is None and len(reader["models"]) == 2
    limited = _get(app, "/v1/cluster/overview", LIMITED_KEY).json()
    assert limited["workers"] is not None
    assert [m["model_uid"] for m in limited["models"]] == ["a-model"]


def test_auth_me_says_what_the_key_may_do(tmp_path):
    open_cluster = _get(_app(), "/v1/auth/me").json()
    assert open_cluster["auth"] is False and "models:start" in open_cluster["permissions"]
    app = _app(keys=True, tmp_path=tmp_path)
    assert _get(app, "/v1/auth/me").status_code == 401
    assert _get(app, "/v1/auth/me", "sk-wrong-0123456789").status_code == 401
    assert _get(app, "/v1/auth/me", READER_KEY).json() == {
        "auth": True, "holder": "reader", "permissions": ["models:list"], "models": None}
    assert _get(app, "/v1/auth/me", LIMITED_KEY).json()["models"] == ["a-model"]
    admin = _get(app, "/v1/auth/me", ADMIN_KEY).json()
    assert {"admin", "models:start", "metrics:read"} <= set(admin["permissions"])
    # The UI's files need no key.
    assert _get(app, "/ui/js/main.js").status_code == 200
    assert _get(app, "/ui/cluster").status_code == 200


def test_the_engine_list_says_what_each_engine_runs():
    engines = {e["engine"]: e for e in _get(_app(), "/v1/engines").json()}
    assert engines["llama.cpp"]["formats"] == ["gguf"]
    assert "embedding" in engines["sentence_transformers"]["model_types"]
    assert all(isinstance(e["installed"], bool) for e in engines.values())


IMPORT = re.compile(r"""(?:import|export)\s[^'"]*?from\s+'([^']+)'|import\('([^']+)'\)""")


@pytest.mark.parametrize("module", sorted(p.relative_to(STATIC_DIR).as_posix()
                                          for p in (STATIC_DIR / "js").rglob("*.js")))
def test_every_module_a_module_imports_exists(module):
    path = STATIC_DIR / module
    bare = {"preact", "preact/hooks", "htm"}  # the import map in index.html
    for found in IMPORT.finditer(path.read_text()):
        target = found.group(1) or found.group(2)
        if target in bare:
            continue
        resolved = (STATIC_DIR / target.removeprefix("/ui/")) if target.startswith("/ui/") \
            else (path.parent / target)
        assert resolved.resolve().is_file(), f"{module} imports {target}, which is missing"


def test_the_import_map_and_the_vendor_readme_match_the_vendored_files():
    index = (STATIC_DIR / "index.html").read_text()
    imports = json.loads(re.search(r'<script type="importmap">(.*?)</script>', index, re.S)
                         .group(1))["imports"]
    for url in imports.values():
        assert (STATIC_DIR / url.removeprefix("/ui/")).is_file(), url
    readme = (STATIC_DIR / "vendor/README.md").read_text()
    for path in (STATIC_DIR / "vendor").glob("*.*"):
        if path.suffix in (".js", ".css"):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert f"`{path.name}`" in readme and digest in readme, path.name


def test_gzip_of_the_first_load_stays_small():
    """The cluster page's first load (index, its modules, the vendored Preact) compressed:
    the budget is 300 KB; bench/ui_load.py measures it in Chromium."""
    first = ["index.html", "css/app.css", "vendor/preact.module.js", "vendor/preact-hooks.module.js",
             "vendor/htm.module.js", *[p.relative_to(STATIC_DIR).as_posix() for p in
                                       (STATIC_DIR / "js").glob("*.js")],
             "js/components/layout.js", "js/components/ui.js", "js/components/key_prompt.js",
             "js/pages/cluster.js"]
    total = sum(len(gzip.compress((STATIC_DIR / f).read_bytes())) for f in first)
    assert total < 100_000
