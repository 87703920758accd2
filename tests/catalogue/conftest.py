"""A catalogue's registrations kept where a cluster keeps them: in the state's database
(SQLite here; both databases: tests/database/test_registrations.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet.database import open_database
from fleet.database.registrations import DatabaseRegistrations


@pytest.fixture
def registrations(tmp_path: Path) -> Iterator[DatabaseRegistrations]:
    db = open_database(f"sqlite:///{tmp_path / 'fleet.db'}")
    yield DatabaseRegistrations(db)
    db.close()
