"""`GET /v1/usage`: what the cluster's requests used (fleet.database.usage), summed by key,
user, model or family (`group_by`, repeatable or a comma list), cut into buckets of time
(`bucket`: hour, day or month; none for totals), between `start` and `end` (ISO 8601; default
the last 24 hours), for one `key_id`, `user` or `model` if given; as JSON or, with
`format=csv`, a CSV file with a header row.

Who sees what: an admin key sees every key's usage; any other key only its own (its key_id
is the filter, whatever the query says). Without keys, it answers only clients on this
machine: the usage names the cluster's users and models."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response

from fleet.api.auth.keys import ADMIN, Grant
from fleet.api.auth.middleware import GRANT_SCOPE_KEY
from fleet.api.routes.audit import in_utc
from fleet.database.usage import BUCKETS, GROUP_FIELDS, GROUPS, UsageQuery
from fleet.errors import BadRequest, Forbidden
from fleet.server_config import is_loopback

router = APIRouter()

DEFAULT_SPAN = timedelta(hours=24)
FORMATS = ("json", "csv")
TOTALS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "images",
          "audio_seconds", "mean_latency_ms")


_ROWS = {200: {"description": "The rows, as JSON (`data`) or as CSV with format=csv",
               "content": {"application/json": {}, "text/csv": {}}}}


@router.get("/v1/usage", response_class=Response, responses=_ROWS)
async def usage(request: Request,
                group_by: Annotated[list[str] | None, Query(max_length=8)] = None,
                bucket: str | None = Query(None, max_length=16),
                start: str | None = Query(None, max_length=64,
                                          json_schema_extra={"format": "date-time"}),
                end: str | None = Query(None, max_length=64,
                                        json_schema_extra={"format": "date-time"}),
                key_id: str | None = Query(None, min_length=1, max_length=200),
                user: str | None = Query(None, min_length=1, max_length=200),
                model: str | None = Query(None, min_length=1, max_length=200),
                format: str = Query("json", max_length=8)) -> Response:
    query = UsageQuery(*_span(start, end), group_by=_groups(group_by or []), bucket=_bucket(bucket),
                       key_id=_visible_key(request, key_id), user=user, model=model)
    if format not in FORMATS:
        raise BadRequest(f"format: one of {', '.join(FORMATS)}, not {format!r}",
                         code="invalid_format")
    recorder = request.app.state.usage
    rows = await asyncio.to_thread(recorder.store.query, query) if recorder is not None else []
    if format == "csv":
        return _csv(query, rows)
    return Response(_json(query, rows), media_type="application/json")


def _visible_key(request: Request, asked: str | None) -> str | None:
    """The key whose usage the request may see: any (`asked`) for an admin or a client of
    this machine without keys; its own for other keys."""
    grant: Grant | None = request.scope.get(GRANT_SCOPE_KEY)
    if grant is None:
        client = request.client.host if request.client is not None else ""
        if not is_loopback(client):
            raise Forbidden("without API keys, usage is shown only to clients on the "
                            "cluster's own machine", code="permission_denied")
        return asked
    if grant.allows(ADMIN):
        return asked
    if asked is not None and asked != grant.key_id:
        raise Forbidden("this API key may see only its own usage: leave key_id out, or give "
                        "its own", code="permission_denied")
    return grant.key_id


def _span(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    until = in_utc(end, "end") if end is not None else datetime.now(timezone.utc)
    since = in_utc(start, "start") if start is not None else until - DEFAULT_SPAN
    if since >= until:
        raise BadRequest("start must be before end", code="invalid_range")
    return since, until


def _groups(given: list[str]) -> tuple[str, ...]:
    names = [name.strip() for value in given for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        raise BadRequest(f"group_by: {unknown[0]!r} is none of {', '.join(GROUPS)}",
                         code="invalid_group_by")
    return tuple(dict.fromkeys(names))


def _bucket(given: str | None) -> str | None:
    if given is None or given == "none":
        return None
    if given not in BUCKETS:
        raise BadRequest(f"bucket: one of {', '.join(BUCKETS)} or none, not {given!r}",
                         code="invalid_bucket")
    return given


def _columns(query: UsageQuery) -> list[str]:
    bucketed = ["bucket"] if query.bucket is not None else []
    return [*bucketed, *(GROUP_FIELDS[name] for name in query.group_by), *TOTALS]


def _json(query: UsageQuery, rows: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"object": "list", "start": _iso(query.start), "end": _iso(query.end),
                         "bucket": query.bucket, "group_by": list(query.group_by),
                         "data": rows})


def _csv(query: UsageQuery, rows: list[dict[str, Any]]) -> Response:
    out = io.StringIO()
    writer = csv.DictWriter(out, _columns(query), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    name = f"fleet-usage-{query.start:%Y%m%dT%H%M}-{query.end:%Y%m%dT%H%M}.csv"
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"content-disposition": f'attachment; filename="{name}"'})


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")
