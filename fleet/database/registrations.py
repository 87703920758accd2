"""Custom registrations in the database: the catalogue's store (fleet.catalogue.registry.
RegistrationStore). The catalogue reads them once at start and keeps them in memory; each
register and unregister is one short transaction, written before the catalogue shows it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fleet.database.engine import JSON_WRITE_ERRORS, Database
from fleet.database.schema import Registration


class DatabaseRegistrations:
    def __init__(self, db: Database):
        self.db = db

    def load(self) -> list[tuple[str, str, Any]]:
        """(model type, model name, family as saved) of every registration, by type and name."""
        with self.db.reading() as session:
            rows = session.execute(select(Registration.model_type, Registration.model_name,
                                          Registration.family)).all()
        return sorted((model_type, name, family) for model_type, name, family in rows)

    def save(self, model_type: str, model_name: str, family: dict[str, Any]) -> None:
        self._write(f"register {model_type} {model_name!r}",
                    lambda session: session.merge(Registration(
                        model_type=model_type, model_name=model_name, family=family)))

    def delete(self, model_type: str, model_name: str) -> None:
        self._write(f"unregister {model_type} {model_name!r}",
                    lambda session: session.execute(delete(Registration).where(
                        Registration.model_type == model_type,
                        Registration.model_name == model_name)))

    def _write(self, what: str, change: Callable[[Session], object]) -> None:
        with self.db.saving(f"{what} in {self.db.shown}",
                            f"save the registration to {self.db.shown}",
                            JSON_WRITE_ERRORS) as session:
            change(session)
