"""Reading GET /v1/usage in end-to-end tests: the recorder writes each second, so a test waits
for the totals of its own requests (those that ended after `start`)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

import httpx


def now_iso() -> str:
    """A start for the usage of the requests a test is about to make. The server notes a
    request's end after its last byte left, so one the client has just seen end may be noted
    a moment after now: the earlier requests are given that moment first."""
    time.sleep(0.5)
    return datetime.now(timezone.utc).isoformat()


def usage_totals(http: httpx.Client, start: str, model: str, requests: int,
                 within_s: float = 15.0) -> dict[str, Any]:
    """The totals of `model` since `start`, once `requests` requests are recorded."""
    deadline = time.monotonic() + within_s
    while True:
        answer = http.get("/v1/usage", params={"start": start, "model": model})
        assert answer.status_code == 200, answer.text
        rows = answer.json()["data"]
        if rows and rows[0]["requests"] >= requests:
            return rows[0]
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
