"""The `fleet_meta` table: facts about the database itself, one JSON value per key."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from fleet.database.schema import Meta

# {"fleet": version, "revision": schema revision, "at": ISO time}: named when an older Fleet
# refuses the schema that this one left.
UPGRADED_BY = "upgraded_by"
# Set once a supervisor has written the launched models (or imported a readable state file):
# until then, the models of the last run are unknown (fleet.database.launched_models).
MODELS_KNOWN = "models_known"
# What the first start imported from FLEET_HOME's files (fleet.database.legacy_import).
IMPORTED = "imported_from_fleet_home"
# A new random token at each change of the API keys: what API processes poll to know that
# they must read the keys again (fleet.database.api_keys).
KEYS_CHANGED = "keys_changed"


def get(session: Session, key: str, default: Any = None) -> Any:
    row = session.get(Meta, key)
    return default if row is None else row.value


def put(session: Session, key: str, value: Any) -> None:
    session.merge(Meta(key=key, value=value))
