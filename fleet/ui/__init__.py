"""The web UI: static files (index.html, ES modules, CSS and a few vendored libraries) that the
API serves at /ui/. No build step: what is in `static/` is what the browser gets
(docs/ui.md says why)."""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
