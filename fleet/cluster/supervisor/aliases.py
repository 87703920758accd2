"""The running models' aliases (fleet.model_aliases), as the supervisor keeps them: in each
model's launch request (`aliases`), so that they are saved with it and a restart keeps them,
and changed while the model serves."""

from __future__ import annotations

import logging
from typing import Any

from fleet.cluster.supervisor.cluster_state import ClusterState
from fleet.cluster.supervisor.records import ModelRecord
from fleet.errors import BadRequest, NotFound
from fleet.model_aliases import ALIASES_CHANGED, check_alias_names, check_aliases_free

logger = logging.getLogger(__name__)


def alias_table(cluster: ClusterState) -> dict[str, str]:
    """alias -> the uid of the model it names."""
    return {alias: uid for uid, record in cluster.models.items()
            for alias in record.request.get("aliases") or ()}


def check_launch(cluster: ClusterState, uid: str, request: dict[str, Any]) -> None:
    """A launch's uid and aliases against the names in use: BadRequest `alias_taken`."""
    taken = alias_table(cluster)
    if uid in taken and taken[uid] != uid:
        raise BadRequest(f"model uid {uid!r} is an alias of model {taken[uid]!r}; remove the "
                         "alias there first or pick another uid", code="alias_taken")
    others = [u for u in cluster.models if u != uid]
    check_aliases_free(uid, request.get("aliases") or (), others, taken)


def announce(cluster: ClusterState, record: ModelRecord) -> None:
    """Tell the API processes that the names changed, when this model has any."""
    if record.request.get("aliases"):
        cluster.routes.touch(ALIASES_CHANGED)


async def set_aliases(cluster: ClusterState, restorer: Any, uid: str,
                      aliases: list[str]) -> list[str]:
    """Replace the model's aliases (an empty list removes them), saved before they apply."""
    try:
        names = check_alias_names(aliases)
    except ValueError as exc:
        raise BadRequest(str(exc), code="invalid_alias") from None
    async with cluster.locks.hold(uid):
        record = cluster.models.get(uid)
        if record is None or record.stand_in:
            raise NotFound(f"model {uid!r} is not running", code="model_not_found")
        check_aliases_free(uid, names, [u for u in cluster.models if u != uid],
                           alias_table(cluster))
        request = {**record.request, "aliases": names}
        if not names:
            request.pop("aliases")
        restorer.save({uid: request})
        record.request = request
        cluster.routes.touch(ALIASES_CHANGED)
    logger.info("model %s answers to %s", uid, ", ".join(names) or "its uid only")
    return names
