"""`GET /v1/audit` (admin keys): the audit log, newest first (fleet.database.audit), filtered
by `since` (an ISO 8601 date-time; without a zone, UTC), `action` (e.g. `model.launch`,
`key.revoke`) and `limit` (1 to 1000, default 100): `{"object": "list", "data": [...]}`."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import TypeAdapter

from fleet.database.audit import MAX_ENTRIES
from fleet.errors import BadRequest

router = APIRouter()

# Read as JSON's date-time strings are, strictly, and only what reads as one (RFC 3339's date,
# then its time): pydantic would also take `since=0.5` for a Unix time.
_DATE_TIME = TypeAdapter(datetime)
_LOOKS_LIKE_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


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


def in_utc(value: str, field: str) -> datetime:
    """`value` in UTC (read as UTC without a zone); a 400 naming `field` for what is not an
    ISO 8601 date-time, or one that UTC cannot hold."""
    try:
        if not _LOOKS_LIKE_DATE_TIME.match(value):
            raise ValueError(value)
        when = _DATE_TIME.validate_json(json.dumps(value), strict=True)
        when = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when
        return when.astimezone(timezone.utc)
    except ValueError:  # pydantic's ValidationError is one
        raise BadRequest(f"{field}: give an ISO 8601 date-time, e.g. 2026-01-31T12:00:00Z",
                         code="invalid_date_time") from None
    except OverflowError:
        raise BadRequest(f"{field} is out of range in UTC", code="invalid_date_time") from None
