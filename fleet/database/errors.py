"""Why the state's database cannot be used: each stops a start with its reason, as a usage
error (no traceback), before any process of the cluster is started."""

from __future__ import annotations

from fleet.errors import FleetError


class DatabaseUnusable(FleetError):
    """The database cannot be reached or written, or holds a schema this Fleet must not touch."""

    def __init__(self, message: str, code: str | None = "database_unusable"):
        super().__init__(message, code)


class SchemaTooNew(DatabaseUnusable):
    """A newer Fleet upgraded the database: this one does not know its tables."""

    def __init__(self, message: str, code: str | None = "schema_too_new"):
        super().__init__(message, code)
