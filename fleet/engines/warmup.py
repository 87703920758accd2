"""Imported by a worker's spare process when it starts: the engine libraries that take seconds
to import are loaded before any launch asks for them. Missing libraries are simply skipped."""

from __future__ import annotations

import importlib
import logging

from fleet.engines.registry import ENGINES

logger = logging.getLogger(__name__)


def import_engine_libraries() -> list[str]:
    imported = []
    for engine in ENGINES:
        if engine.missing_modules():
            continue
        for module in engine.requires:
            try:
                importlib.import_module(module)
                imported.append(module)
            except Exception:  # a broken optional library must not break the spare
                logger.warning("could not pre-import %s", module, exc_info=True)
    return imported


IMPORTED = import_engine_libraries()
