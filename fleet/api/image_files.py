"""The images behind `url` answers: PNG files that the API writes under FLEET_HOME/images and
serves itself (`GET /v1/images/files/{name}`, under the same keys as the rest of the API), each
removed a set time after it was made (FLEET_IMAGE_URL_TTL_S, an hour by default).

Names are 32 random bytes (URL-safe base64): a URL is unguessable, so a key that may call
models cannot list or guess another client's images. Removal is scheduled on the event loop when
a file is written; a file outlives its time only if the server stopped before, and such leftovers
are swept at the next write and refused when asked for."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from pathlib import Path

from fleet.errors import NotFound

_NAME = re.compile(r"[A-Za-z0-9_-]{43}\.png")
_SWEEP_EVERY_S = 60.0


class ImageFileStore:
    def __init__(self, root: Path, ttl_s: float):
        self.root = root
        self.ttl_s = ttl_s
        self._next_sweep = 0.0

    def _write(self, png: bytes) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        name = secrets.token_urlsafe(32) + ".png"
        partial = self.root / f".{name}.part"
        partial.write_bytes(png)
        os.replace(partial, self.root / name)  # never a half-written file under its name
        return name

    async def save(self, images: list[bytes]) -> list[str]:
        """The names of the stored images, each to be removed after the store's time."""
        names = await asyncio.to_thread(lambda: [self._write(png) for png in images])
        loop = asyncio.get_running_loop()
        for name in names:  # the loop holds its timers; nothing to keep here
            loop.call_later(self.ttl_s, self._remove, name)
        if time.monotonic() >= self._next_sweep:
            self._next_sweep = time.monotonic() + _SWEEP_EVERY_S
            await asyncio.to_thread(self.sweep)
        return names

    def _remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def sweep(self) -> int:
        """Remove the files past their time (left by an earlier run); how many."""
        removed = 0
        cutoff = time.time() - self.ttl_s
        for path in self.root.glob("*.png") if self.root.is_dir() else ():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    async def read(self, name: str) -> bytes:
        """The image's bytes; 404 for a name that is not one of ours, is gone or is past its
        time (the same answer for each, so that a probe learns nothing)."""
        if not _NAME.fullmatch(name):
            raise NotFound(f"no image {name!r}", code="image_not_found")
        path = self.root / name

        def read_fresh() -> bytes | None:
            try:
                if path.stat().st_mtime < time.time() - self.ttl_s:
                    path.unlink(missing_ok=True)
                    return None
                return path.read_bytes()
            except FileNotFoundError:
                return None

        data = await asyncio.to_thread(read_fresh)
        if data is None:
            raise NotFound(f"no image {name!r} (images are kept {self.ttl_s:g} s)",
                           code="image_not_found")
        return data
