"""`FLEET_HOME/state/models.json`: the launch requests of the models to bring back at the next
start, one entry per model uid.

Written before the change it records is made visible (a launch, a scale, a terminate), so that
what a restart brings back is what the user last saw accepted; a write that fails is reported
(StateNotSaved) and the change is not made. A file that cannot be read is moved aside, with a
log line that says where, and the supervisor starts without it, instead of not starting (the
models whose replicas its workers still run are then rebuilt from them: fleet.cluster.supervisor.restore)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from fleet.errors import FleetError
from fleet.state import write_json_atomic

logger = logging.getLogger(__name__)


class StateNotSaved(FleetError):
    """The state file could not be written (a full or read-only disk): the change asked for was
    not made, so that a restart cannot undo or redo it behind the user's back."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, code: str | None = "state_not_saved"):
        super().__init__(message, code)


class ModelStore:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, Any] | None:
        """Every entry as written (malformed ones included: the caller keeps them as they are);
        {} when there is no file (no model ran); None when the file cannot be read, which says
        nothing of the models of the last run. A file that is not a JSON object is moved aside."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            logger.error("cannot read the state file %s (%s); starting without the models of the "
                         "last run", self.path, exc.strerror)
            return None
        try:
            data = json.loads(raw.decode("utf-8"))  # a UnicodeDecodeError is a ValueError
            if not isinstance(data, dict):
                raise ValueError(f"it holds a {type(data).__name__}, not an object")
        except ValueError as exc:
            self._move_aside(exc)
            return None
        return data

    def _move_aside(self, problem: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            self.path.replace(aside)
            where = f"moved it to {aside}"
        except OSError as exc:
            where = f"could not move it aside ({exc.strerror})"
        logger.error("the state file %s is corrupt (%s): %s; starting without the models of the "
                     "last run, except those whose replicas workers still run (rebuilt from them); "
                     "relaunch the others, or repair the file and restart", self.path, problem,
                     where)

    def write(self, entries: dict[str, Any]) -> None:
        """Replace the file's content atomically; StateNotSaved if the disk refuses."""
        try:
            write_json_atomic(self.path, entries)
        except (OSError, TypeError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            logger.error("could not write the state file %s: %s", self.path, reason)
            raise StateNotSaved(f"could not save the cluster's state to {self.path} ({reason}); "
                                "nothing was changed") from None
