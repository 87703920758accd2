"""Logs go to stderr and to a file under FLEET_HOME/logs, one file per component."""

from __future__ import annotations

import logging
import logging.handlers

from fleet.settings import logs_dir

_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def setup_logging(component: str, level: str = "INFO") -> str:
    directory = logs_dir()
    directory.mkdir(parents=True, exist_ok=True)
    log_file = directory / f"{component}.log"
    root = logging.getLogger()
    root.setLevel(level.upper())
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stream = logging.StreamHandler()
    stream.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(stream)
    rotating = logging.handlers.RotatingFileHandler(
        log_file, maxBytes=20 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    rotating.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(rotating)
    # xoscar is chatty at INFO about every pool change.
    logging.getLogger("xoscar").setLevel(logging.WARNING)
    return str(log_file)
