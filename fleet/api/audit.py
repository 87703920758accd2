"""Recording a management action in the audit log (fleet.database.audit): who (the request's
key: its holder's name and the key's id; "anonymous" on a cluster without keys), from which
address, what, on what. Called by the management routes once their action is done, never by
the inference routes; a log that cannot be written is logged, and the action stands."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import Request

from fleet.api.auth.middleware import GRANT_SCOPE_KEY

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"  # a request to a cluster that needs no key


async def audit(request: Request, action: str, target: str | None,
                details: dict[str, Any] | None = None) -> None:
    log = getattr(request.app.state, "audit", None)
    if log is None:  # an application without a database (built by a test)
        return
    grant = request.scope.get(GRANT_SCOPE_KEY)
    actor, key_id = (grant.holder, grant.key_id) if grant is not None else (ANONYMOUS, None)
    client = request.client.host if request.client is not None else None
    try:
        await asyncio.to_thread(log.record, actor=actor, actor_key_id=key_id, action=action,
                                target=target, details=details, client_address=client)
    except Exception as exc:  # the action is done; losing its record must not undo it
        logger.error("audit log: could not record %s %s by %s: %s", action, target, actor, exc)
