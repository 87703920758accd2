"""Times given in a query string (`since`, `start`, `end` of the audit log and the usage), read
one way for every route: ISO 8601 date-times, in UTC."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from pydantic import TypeAdapter

from fleet.errors import BadRequest

# Read as JSON's date-time strings are, strictly, and only what reads as one (RFC 3339's date,
# then its time): pydantic would also take `since=0.5` for a Unix time.
_DATE_TIME = TypeAdapter(datetime)
_LOOKS_LIKE_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


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
