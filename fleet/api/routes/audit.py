"""`GET /v1/audit` (admin keys): the audit log, newest first (fleet.database.audit), filtered
by `since` (an ISO 8601 date-time; without a zone, UTC), `action` (e.g. `model.launch`,
`key.revoke`) and `limit` (1 to 1000, default 100): `{"object": "list", "data": [...]}`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from fleet.api.query_times import in_utc
from fleet.database.audit import MAX_ENTRIES

router = APIRouter()

@router.get("/v1/audit")
async def audit_log(request: Request,
                    since: Annotated[str | None, Query(max_length=64, json_schema_extra={
                        "format": "date-time"})] = None,
                    action: str | None = Query(None, min_length=1, max_length=100),
                    limit: int = Query(100, ge=1, le=MAX_ENTRIES)) -> dict[str, Any]:
    log = request.app.state.audit
    when = in_utc(since, "since") if since is not None else None
    if log is None:  # an application without a database (built by a test)
        return {"object": "list", "data": []}
    entries = await asyncio.to_thread(log.query, when, action, limit)
    return {"object": "list", "data": entries}
