"""The first start on a FLEET_HOME that Fleet 0.1 kept in files: its custom registrations
(`registrations/<type>/<name>.json`) and launched models (`state/models.json`) go into the
database in one transaction, and both folders are then moved aside as backups
(`registrations.imported-<time>`, `state.imported-<time>`), so that the next start imports
nothing and the files stay for whoever wants them back.

Only into a database that holds no state yet: a database that a cluster already uses (a team's
PostgreSQL, say) wins, and the files are left where they are, with a warning.

What the files held is imported as it was, malformed entries included (the restore checks each
one, and keeps it for the operator to repair). A state file that cannot be read at all is not:
the models of the last run are then unknown, as they were when Fleet 0.1 found such a file, so
that a replica a worker still runs is adopted rather than ended (fleet.database.launched_models).
A registration file that cannot be read stays in the backup, named in the log."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import fleet.database.meta as meta
from fleet.catalogue.schemas import MODEL_TYPES
from fleet.database.engine import Database
from fleet.database.schema import LaunchedModel, Registration, utc_now

logger = logging.getLogger(__name__)

REGISTRATIONS = "registrations"
STATE = "state"
MODELS_FILE = "models.json"


@dataclass
class ImportReport:
    registrations: int = 0
    models: int = 0
    models_unreadable: str | None = None  # why the state file could not be read
    not_imported: list[str] = field(default_factory=list)  # files kept only in the backup
    backups: list[Path] = field(default_factory=list)


def import_fleet_home(db: Database, home: Path) -> ImportReport | None:
    """Import FLEET_HOME's files into `db` if there are any and it holds no state yet; None
    when nothing was imported."""
    folders = [home / name for name in (REGISTRATIONS, STATE) if (home / name).is_dir()]
    if not folders:
        return None
    report = ImportReport()
    with db.writing() as session:
        if _holds_state(session):
            logger.warning("%s holds the files of an older Fleet (%s), but the database %s "
                           "already holds a cluster's state: they were not imported (move "
                           "them away to silence this)", home,
                           ", ".join(f.name for f in folders), db.shown)
            return None
        _import_registrations(session, home / REGISTRATIONS, report)
        _import_models(session, home / STATE / MODELS_FILE, report)
        meta.put(session, meta.IMPORTED, {"from": str(home), "at": utc_now().isoformat(),
                                          "registrations": report.registrations,
                                          "models": report.models})
    report.backups = _move_aside(folders)
    _log(report, home / STATE / MODELS_FILE, db)
    return report


def _holds_state(session: Session) -> bool:
    return any(session.execute(select(table).limit(1)).first() is not None
               for table in (Registration, LaunchedModel)) or bool(meta.get(session, meta.IMPORTED))


def _read(path: Path) -> Any:
    """The JSON a file holds; ValueError (or OSError) when it cannot be read."""
    return json.loads(path.read_bytes().decode("utf-8"))  # UnicodeDecodeError is a ValueError


def _import_registrations(session: Session, folder: Path, report: ImportReport) -> None:
    families: dict[tuple[str, str], Any] = {}
    for path in sorted(folder.glob("*/*.json")) if folder.is_dir() else []:
        model_type = path.parent.name
        if model_type not in MODEL_TYPES:
            report.not_imported.append(f"{path} (no model type {model_type!r})")
            continue
        try:
            family = _read(path)
        except (OSError, ValueError) as exc:
            report.not_imported.append(f"{path} ({exc})")
            continue
        name = family.get("model_name") if isinstance(family, dict) else None
        # Fleet 0.1 named each file after its model; the later file of two wins, as it did.
        families[(model_type, name if isinstance(name, str) and name else path.stem)] = family
    for (model_type, name), family in families.items():
        session.add(Registration(model_type=model_type, model_name=name, family=family))
    report.registrations = len(families)


def _import_models(session: Session, path: Path, report: ImportReport) -> None:
    try:
        entries = _read(path)
        if not isinstance(entries, dict):
            raise ValueError(f"it holds a {type(entries).__name__}, not an object")
    except FileNotFoundError:
        entries = {}  # no model ran
    except (OSError, ValueError) as exc:
        report.models_unreadable = str(exc)
        return
    for uid, request in entries.items():
        session.add(LaunchedModel(uid=uid, request=request))
    meta.put(session, meta.MODELS_KNOWN, True)
    report.models = len(entries)


def _move_aside(folders: list[Path]) -> list[Path]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    moved = []
    for folder in folders:
        backup = folder.with_name(f"{folder.name}.imported-{stamp}")
        try:
            folder.rename(backup)
            moved.append(backup)
        except OSError as exc:
            logger.warning("imported %s, but could not move it aside to %s (%s): the next "
                           "start will not import it again", folder, backup, exc.strerror)
    return moved


def _log(report: ImportReport, state_file: Path, db: Database) -> None:
    where = ", ".join(map(str, report.backups)) or "their folders"
    logger.info("imported %d registrations and %d launched models from the files of an older "
                "Fleet into %s; the files are kept in %s", report.registrations, report.models,
                db.shown, where)
    for item in report.not_imported:
        logger.error("not imported: %s; it stays in the backup", item)
    if report.models_unreadable is not None:
        logger.error("the state file %s is corrupt (%s): it is kept in the backup (%s); "
                     "starting without the models of the last run, except those whose "
                     "replicas workers still run (rebuilt from them); relaunch the others",
                     state_file, report.models_unreadable, where)
