"""`FLEET_HOME/state/models.json`: the launch requests of the models to bring back at the next
start, one entry per model uid.

Written before the change it records is made visible (a launch, a scale, a terminate), so that
what a restart brings back is what the user last saw accepted; a write that fails is reported
(StateNotSaved) and the change is not made. A file that cannot be read is moved aside, with a
log line that says where, and the supervisor starts without it, instead of not starting."""

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


def is_restorable(uid: Any, entry: Any) -> str | None:
    """Why an entry cannot be a launch request (None when it can)."""
    if not isinstance(uid, str) or not uid:
        return f"its uid {uid!r} is not a non-empty string"
    if not isinstance(entry, dict):
        return f"it is a {type(entry).__name__}, not a launch request (an object)"
    if not isinstance(entry.get("model_name"), str) or not entry["model_name"]:
        return "it has no model_name"
    return None


class ModelStore:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, Any]:
        """Every entry as written (malformed ones included: the caller keeps them as they are).
        A file that is not a JSON object is moved aside."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            logger.error("cannot read the state file %s (%s); starting without the models of the "
                         "last run", self.path, exc.strerror)
            return {}
        try:
            data = json.loads(raw.decode("utf-8"))  # a UnicodeDecodeError is a ValueError
            if not isinstance(data, dict):
                raise ValueError(f"it holds a {type(data).__name__}, not an object")
        except ValueError as exc:
            self._move_aside(exc)
            return {}
        return data

    def _move_aside(self, problem: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            self.path.replace(aside)
            where = f"moved it to {aside}"
        except OSError as exc:
            where = f"could not move it aside ({exc.strerror})"
        logger.error("the state file %s is corrupt (%s): %s; starting without the models of the "
                     "last run (relaunch them, or repair the file and restart)",
                     self.path, problem, where)

    def write(self, entries: dict[str, Any]) -> None:
        """Replace the file's content atomically; StateNotSaved if the disk refuses."""
        try:
            write_json_atomic(self.path, entries)
        except (OSError, TypeError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            logger.error("could not write the state file %s: %s", self.path, reason)
            raise StateNotSaved(f"could not save the cluster's state to {self.path} ({reason}); "
                                "nothing was changed") from None
