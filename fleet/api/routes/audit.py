"""`GET /v1/audit` (admin keys): the audit log, newest first (fleet.database.audit), filtered
by `since` (an ISO 8601 time; without a zone, UTC), `action` (e.g. `model.launch`,
`key.revoke`) and `limit` (1 to 1000, default 100): `{"object": "list", "data": [...]}`."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from fleet.database.audit import MAX_ENTRIES
from fleet.errors import BadRequest

router = APIRouter()


@router.get("/v1/audit")
async def audit_log(request: Request, since: Annotated[datetime | None, Query()] = None,
                    action: str | None = Query(None, min_length=1, max_length=100),
                    limit: int = Query(100, ge=1, le=MAX_ENTRIES)) -> dict[str, Any]:
    log = request.app.state.audit
    if log is None:  # an application without a database (built by a test)
        return {"object": "list", "data": []}
    if since is not None:
        since = _in_utc(since)
    entries = await asyncio.to_thread(log.query, since, action, limit)
    return {"object": "list", "data": entries}


def _in_utc(since: datetime) -> datetime:
    """`since` in UTC (read as UTC without a zone); a 400 where UTC cannot hold it."""
    since = since.replace(tzinfo=timezone.utc) if since.tzinfo is None else since
    try:
        return since.astimezone(timezone.utc)
    except OverflowError:
        raise BadRequest("since is out of range in UTC") from None
