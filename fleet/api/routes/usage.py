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
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response
from pydantic import StringConstraints

from fleet.api.auth.keys import ADMIN, Grant
from fleet.api.auth.middleware import GRANT_SCOPE_KEY
from fleet.api.routes.audit import in_utc
from fleet.database.usage import GROUP_FIELDS, UsageQuery
from fleet.errors import BadRequest, Forbidden
from fleet.server_config import is_loopback

router = APIRouter()

DEFAULT_SPAN = timedelta(hours=24)
TOTALS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "images",
          "audio_seconds", "mean_latency_ms")


_ROWS = {200: {"description": "The rows, as JSON (`data`) or as CSV with format=csv",
               "content": {"application/json": {}, "text/csv": {}}}}


# The document says what each value may be, so that a client (and the fuzzer) knows; a comma
# list of groups is one value of the pattern.
_GROUP = "(key|user|model|family)"
GroupList = list[Annotated[str, StringConstraints(pattern=f"^{_GROUP}(,{_GROUP})*$")]]
_TIME = {"format": "date-time"}


@router.get("/v1/usage", response_class=Response, responses=_ROWS)
async def usage(request: Request,
                group_by: Annotated[GroupList | None, Query(max_length=8)] = None,
                bucket: Literal["hour", "day", "month", "none"] = "none",
                start: Annotated[str | None, Query(max_length=64, json_schema_extra=_TIME)] = None,
                end: Annotated[str | None, Query(max_length=64, json_schema_extra=_TIME)] = None,
                key_id: str | None = Query(None, min_length=1, max_length=200),
                user: str | None = Query(None, min_length=1, max_length=200),
                model: str | None = Query(None, min_length=1, max_length=200),
                format: Literal["json", "csv"] = "json") -> Response:
    query = UsageQuery(*_span(start, end), group_by=_groups(group_by or []),
                       bucket=None if bucket == "none" else bucket,
                       key_id=_visible_key(request, key_id), user=user, model=model)
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
    try:
        since = in_utc(start, "start") if start is not None else until - DEFAULT_SPAN
    except OverflowError:  # an end in year 1 has no day before it
        raise BadRequest("end is too early to count a day back from; give start",
                         code="invalid_range") from None
    if since >= until:
        raise BadRequest("start must be before end", code="invalid_range")
    return since, until


def _groups(given: list[str]) -> tuple[str, ...]:
    """The groups of the repeated and comma-separated values (checked by their pattern)."""
    return tuple(dict.fromkeys(name for value in given for name in value.split(",")))


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
